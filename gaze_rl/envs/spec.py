"""EnvSpec: everything that defines the env a policy sees, and the names of its choices.

Torch-free, so that the CLI builds its parser without loading the simulator stack;
gaze_rl.envs.factory checks a spec and builds it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from gaze_rl.errors import ConfigError

SIM_BACKENDS = ("auto", "physx_cpu", "physx_cuda")
OBS_MODES = ("rgb", "rgb+state")
# Tasks whose pixel pipeline is covered by the test-suite; any registered ManiSkill3 id works.
TESTED_ENV_IDS = ("PushT-v1", "PokeCube-v1", "PushCube-v1", "PickCube-v1")

SimBackend = Literal["auto", "physx_cpu", "physx_cuda"]
ObsMode = Literal["rgb", "rgb+state"]
Variant = Literal["none", "clutter", "lighting", "distract"]
# Strength of the `distract` variant when none is given (gaze_rl.envs.variants). Provisional:
# the calibration against the baseline's success drop is pending (results/distract/README.md).
DISTRACT_STRENGTH = 0.5
RenderQuality = Literal["auto", "fast", "full"]


@dataclass
class EnvSpec:
    """Everything that defines the env a policy sees (saved with each run and checkpoint)."""

    env_id: str = "PushT-v1"
    """ManiSkill3 task id, e.g. PushT-v1, PokeCube-v1, PushCube-v1, PickCube-v1."""
    num_envs: int = 2
    """Parallel envs: CPU processes with physx_cpu, sub-envs of one GPU sim with physx_cuda."""
    image_size: int = 64
    """Camera width and height in pixels (ManiSkill's default camera is 128)."""
    obs_mode: ObsMode = "rgb+state"
    """'rgb': pixels only; 'rgb+state': pixels plus flattened proprioception and task state."""
    sim_backend: SimBackend = "auto"
    """'auto' picks physx_cuda (batched, one process) with CUDA, else physx_cpu (one process per env)."""
    control_mode: str | None = "pd_joint_delta_pos"
    """ManiSkill controller; None keeps the task's default."""
    reward_scale: float = 1.0
    """Multiplies rewards seen by the learner (logged returns stay unscaled)."""
    ignore_terminations: bool = True
    """Run every episode to the time limit (success does not end it), as ManiSkill does for PushT."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for gym.make (task options such as robot_uids)."""
    variant: Variant = "none"
    """Visual robustness variant: 'clutter' (random visual distractors), 'lighting' (random lights) or 'distract'
    (per-episode table, floor and light colours and visual-only look-alike and moving objects; see distract_strength)."""
    distract_strength: float = DISTRACT_STRENGTH
    """Strength of variant 'distract', in [0, 1]: scales the number of distractors (8 at 1), the share of them
    moving, the table and floor colour change and the lights' jitter; 0 renders the normal task's frames."""
    privileged_state: bool = False
    """Append the task objects' true poses (ManiSkill's privileged `state_dict` observations) to the
    state vector: perfect perception of the objects, the upper bound of method 'privileged'."""
    gaze_targets: bool = False
    """Add the observation key 'gaze_target': where each task object is in the image and how large
    (grid units), from the simulator; read only by the oracle gaze (method 'gaze-oracle'), never by the state MLP."""
    render_quality: RenderQuality = "auto"
    """'fast': level-of-detail meshes + a cheap vertex shader (~4-6x less CPU per step with software rendering, real
    SAPIEN frames, same segmentation ids; gaze_rl.envs.fast_render); 'full': stock ManiSkill;
    'auto': fast where SAPIEN renders on the CPU (lavapipe), full on a GPU."""

    def variant_label(self) -> str:
        """The variant as results name it: its name, with distract's strength ('distract-0.5')."""
        return f"distract-{self.distract_strength:g}" if self.variant == "distract" else self.variant

    def variant_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of gym.make that the variant takes (distract: its strength)."""
        return {"distract_strength": self.distract_strength} if self.variant == "distract" else {}


def check_distract_strength(strength: float) -> None:
    """Raises ConfigError unless `strength` is a valid strength of the `distract` variant."""
    if not 0.0 <= strength <= 1.0:
        raise ConfigError(f"distract strength must be in [0, 1] (got {strength}): 0 = the normal task's frames, "
                          f"1 = the strongest distractors; e.g. --distract-strength {DISTRACT_STRENGTH}")
