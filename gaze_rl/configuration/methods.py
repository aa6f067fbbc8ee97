"""The method table: every method name gaze_rl knows, and what it builds.

One entry per method. The CLI choices (`--method`), the config types, `gaze_policy_kwargs`
and the algorithms' defaults all read this table, so a new method is one entry here plus
whatever code its flags switch on. Kept free of torch / SB3 imports so that the CLI can
read it without loading them.

Columns:
- `attention`: kind of attention inside the extractor ("none", "patch", "gaussian"; see
  gaze_rl.nets.attention).
- `contrastive`: whether the return-guided contrastive loss runs (GazePPO / GazeSAC).
- `gaze_trained_by`: who moves the gaze head: "rl" (RL gradients), "contrastive" (the
  contrastive loss only, the paper's split), "nothing" (frozen at its initial vignette), or
  "-" when there is no gaze head.
- `shuffled_returns`: control: the contrastive loss sees the buffer's return labels randomly
  permuted, so any gain it brings cannot come from the return signal.
- `privileged_state`: upper bound: the task objects' true poses (ManiSkill's own privileged
  `state_dict` observations) join the state vector, i.e. perfect perception of the objects.

Two upper bounds sit in the table as controls, so that "no gain" can be told from "no headroom":
`privileged` (what perfect perception gives at the same budget) and `gaze-oracle` (what a
perfectly placed fovea gives through this architecture: the simulator places one Gaussian on
each task object every step; gaze_rl.envs.gaze_targets).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gaze_rl.errors import ConfigError


@dataclass(frozen=True)
class MethodSpec:
    """What one method builds (see the module docstring for the columns)."""

    attention: Literal["none", "patch", "gaussian", "oracle"]
    contrastive: bool
    gaze_trained_by: Literal["rl", "contrastive", "nothing", "simulator", "-"]
    help: str
    shuffled_returns: bool = False
    privileged_state: bool = False

    @property
    def detach_attention(self) -> bool:
        """RL gradients stop at the attention map unless RL is what trains it."""
        return self.gaze_trained_by in ("contrastive", "nothing")

    @property
    def gaze_targets(self) -> bool:
        """The env must put the simulator's gaze targets into the observations (gaze-oracle)."""
        return self.attention == "oracle"


METHODS: dict[str, MethodSpec] = {
    "baseline": MethodSpec("none", False, "-", "plain CNN"),
    "patch": MethodSpec("patch", False, "rl", "per-cell softmax attention trained by RL"),
    "foveal": MethodSpec("gaussian", False, "rl", "Gaussian gaze trained by RL"),
    "gaze": MethodSpec("gaussian", True, "contrastive",
                       "Gaussian gaze trained by return-guided contrastive learning (the paper)"),
    "gaze-shuffled": MethodSpec("gaussian", True, "contrastive",
                                "control: gaze with the return labels randomly permuted", shuffled_returns=True),
    "gaze-frozen": MethodSpec("gaussian", False, "nothing", "control: Gaussian gaze frozen at its initial vignette"),
    "privileged": MethodSpec("none", False, "-", "upper bound: baseline plus the task objects' true poses in the state",
                             privileged_state=True),
    "gaze-oracle": MethodSpec("oracle", False, "simulator",
                              "upper bound: one Gaussian placed on each task object by the simulator, every step"),
}
METHOD_NAMES: tuple[str, ...] = tuple(METHODS)

# The CLI's `--method` type; built from the table so the choices cannot drift from it.
MethodName = Literal[METHOD_NAMES]  # type: ignore[valid-type]


# Image augmentations of the RL update (gaze_rl.nets.augment), an option of every method: the
# reviewers' baseline is `baseline+shift` (DrQ / RAD random shift).
AUGMENTS: tuple[str, ...] = ("none", "shift")
# `gaze-rl bench --methods` takes a method with optional modifiers, "<method>[+shift][+residual]":
# "+shift" trains with the augmentation, "+residual" re-weights by 1 + map (--gaze.residual).
BENCH_ARMS: tuple[str, ...] = tuple(f"{m}{a}{r}" for m in METHOD_NAMES for a in ("", "+shift") for r in ("", "+residual"))
BenchArm = Literal[BENCH_ARMS]  # type: ignore[valid-type]


@dataclass(frozen=True)
class Arm:
    """One arm of a bench grid: a method and its modifiers."""

    method: str
    augment: str = "none"
    residual: bool = False


def parse_arm(arm: str) -> Arm:
    """"gaze+shift+residual" -> Arm("gaze", "shift", True); "gaze" -> Arm("gaze")."""
    method, *modifiers = arm.split("+")
    spec = method_spec(method)
    augment, residual = "none", False
    for modifier in modifiers:
        if modifier == "residual":
            if spec.attention == "none":
                raise ConfigError(f"{arm!r}: method {method!r} has no attention map to make residual")
            residual = True
        elif modifier in AUGMENTS and modifier != "none":
            augment = modifier
        else:
            raise ConfigError(f"unknown modifier {modifier!r} in {arm!r}; valid: "
                              f"{', '.join(a for a in AUGMENTS if a != 'none')} (augment), residual (map form)")
    return Arm(method, augment, residual)


def method_spec(name: str) -> MethodSpec:
    """The table entry of `name`; a ConfigError naming the valid choices otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown method {name!r}; valid choices: {', '.join(METHOD_NAMES)}") from None
