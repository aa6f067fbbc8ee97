"""Visual robustness variants of any ManiSkill3 tabletop task, as in the paper's clutter tests.

- `clutter`: `num_distractors` cubes of random colours and sizes scattered over the table each
  episode. They are visual only (no collision shape), so the task's physics, rewards and
  success are unchanged and any change in success is due to what the policy sees.
- `lighting`: random ambient level and directional light colours and directions, drawn once
  per env instance (ManiSkill builds lights when it builds the scene).

`task_env_id("PushT-v1", "clutter")` registers (once per process) and returns the id of the
variant, e.g. "PushT-v1-clutter"; with `render_quality="fast"` the class also gets gaze_rl's
level-of-detail meshes (gaze_rl.envs.fast_render), e.g. "PushT-v1-clutter-fastrender".
`EnvSpec(variant=..., render_quality=...)` does this for you.
"""

from __future__ import annotations

import numpy as np
import torch

VARIANTS = ("none", "clutter", "lighting")
# Where distractors go, in the table frame of ManiSkill's tabletop scenes (metres).
TABLE_HALF_EXTENT = 0.25
NUM_DISTRACTORS = 6


def _clutter_class(base: type) -> type:
    import sapien
    from mani_skill.utils.building import actors
    from mani_skill.utils.structs.pose import Pose

    class Clutter(base):
        def _load_scene(self, options: dict):
            super()._load_scene(options)
            rng = np.random.RandomState(0)  # fixed look across instances: colours and sizes
            self._distractors = [
                actors.build_cube(self.scene, half_size=float(rng.uniform(0.02, 0.04)),
                                  color=[*rng.uniform(0.05, 1.0, 3), 1.0], name=f"distractor_{i}",
                                  body_type="kinematic", add_collision=False,
                                  # placed per episode below; a pose here silences ManiSkill's warning
                                  initial_pose=sapien.Pose(p=[0.0, 0.0, 0.03]))
                for i in range(NUM_DISTRACTORS)
            ]

        def _initialize_episode(self, env_idx: torch.Tensor, options: dict):
            super()._initialize_episode(env_idx, options)
            # Drawn after the task's own draws, from the per-episode RNG: the task's
            # randomisation is the same as without clutter.
            rng = self._batched_episode_rng[env_idx]
            xy = rng.uniform(-TABLE_HALF_EXTENT, TABLE_HALF_EXTENT, size=(NUM_DISTRACTORS, 2))
            for i, distractor in enumerate(self._distractors):
                p = torch.zeros((len(env_idx), 3), device=self.device)
                p[:, :2] = torch.as_tensor(xy[:, i], dtype=torch.float32, device=self.device)
                p[:, 2] = 0.03
                distractor.set_pose(Pose.create_from_pq(p=p))

    return Clutter


def _lighting_class(base: type) -> type:
    class Lighting(base):
        def _load_lighting(self, options: dict):
            rng = np.random.RandomState(int(self._main_seed[0]) if self._main_seed else 0)
            self.scene.set_ambient_light(list(rng.uniform(0.05, 0.6, 3)))
            for _ in range(2):
                direction = [*rng.uniform(-1, 1, 2), -1.0]
                self.scene.add_directional_light(direction, list(rng.uniform(0.2, 1.6, 3)))

    return Lighting


def _named(cls: type, name: str) -> type:
    cls.__name__ = cls.__qualname__ = name
    return cls


_BUILDERS = {"clutter": _clutter_class, "lighting": _lighting_class}


def task_env_id(env_id: str, variant: str = "none", render_quality: str = "full") -> str:
    """Registers `env_id`'s class with a visual variant and/or fast rendering (idempotent) and
    returns the registered id; `env_id` itself for ("none", "full")."""
    from gaze_rl.envs.fast_render import fast_render_class

    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; valid choices: {', '.join(VARIANTS)}")
    if render_quality not in ("fast", "full"):
        raise ValueError(f"render_quality must be resolved to 'fast' or 'full' here (got {render_quality!r})")
    import mani_skill.envs  # noqa: F401
    from mani_skill.utils.registration import REGISTERED_ENVS, register_env

    new_id = env_id + ("" if variant == "none" else f"-{variant}") + ("-fastrender" if render_quality == "fast" else "")
    if new_id in REGISTERED_ENVS:
        return new_id
    cls = REGISTERED_ENVS[env_id].cls
    if variant != "none":
        cls = _named(_BUILDERS[variant](cls), f"{cls.__name__}{variant.capitalize()}")
    if render_quality == "fast":
        cls = _named(fast_render_class(cls), f"{cls.__name__}FastRender")
    register_env(new_id, max_episode_steps=REGISTERED_ENVS[env_id].max_episode_steps)(cls)
    return new_id
