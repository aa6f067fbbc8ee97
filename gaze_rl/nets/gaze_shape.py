"""The checks of the Gaussian gaze's shape options, shared by GaussianGaze and the CLI's GazeOptions.

Torch-free, so that a bad `--gaze.*` option is refused while the CLI parses, before torch loads.
"""

from __future__ import annotations

from gaze_rl.errors import ConfigError

NORMALIZE_MODES = ("peak", "sum")


def check_normalize_mode(mode: str) -> None:
    if mode not in NORMALIZE_MODES:
        raise ConfigError(f"unknown normalize mode {mode!r}; valid modes are {NORMALIZE_MODES}")


def check_gaze_shape(num_gaussians: int, sigma_floor: float, sigma_init: float, rho_max: float = 0.95,
                     normalize: str = "peak") -> None:
    """Raises a ConfigError (a ValueError) naming the fix unless the options give a valid gaze."""
    check_normalize_mode(normalize)
    if num_gaussians < 1:
        raise ConfigError(
            f"num_gaussians must be >= 1 (got {num_gaussians}); use 1 for the paper's single gaze"
        )
    if sigma_floor <= 0:
        raise ConfigError(
            f"sigma_floor must be > 0 (got {sigma_floor}); it keeps the covariance positive "
            "definite, use e.g. 0.15"
        )
    if sigma_init <= sigma_floor:
        raise ConfigError(
            f"sigma_init must be > sigma_floor (got sigma_init={sigma_init}, "
            f"sigma_floor={sigma_floor}); raise sigma_init or lower sigma_floor"
        )
    if not 0.0 < rho_max < 1.0:
        raise ConfigError(
            f"rho_max must be in (0, 1) (got {rho_max}); use e.g. 0.95 so the covariance "
            "stays positive definite"
        )
