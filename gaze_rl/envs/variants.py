"""Visual robustness variants of any ManiSkill3 tabletop task, as in the paper's clutter tests.

- `clutter`: `num_distractors` cubes of random colours and sizes scattered over the table each
  episode. They are visual only (no collision shape), so the task's physics, rewards and
  success are unchanged and any change in success is due to what the policy sees.
- `lighting`: random ambient level and directional light colours and directions, drawn once
  per env instance (ManiSkill builds lights when it builds the scene).
- `distract`: distractors meant to hurt (Distracting Control Suite style), with one strength
  `s` in [0, 1] (`distract_strength`; `DistractCounts` and the constants below say what it
  scales). Per episode: the table's and the floor's colours (their textures tinted towards a
  random colour by `s`); the ambient and directional lights' colours (gains in 1 +- 0.6 s) and
  directions (tilted by up to 60 s degrees); `round(8 s)` visual-only objects, alternately
  look-alikes of the task's movable objects (their meshes, colours and sizes) and primitives of
  random colours, a share `s` of them moving every step along smooth random paths. Seen from
  the camera, no distractor (anywhere on its path) can cover or touch the goal or a task object
  where it starts (`_clear_views`); one that finds no such place in view sits the episode out.
  At `s = 0` the frames are the normal task's. No camera jitter: it would move the task
  objects' pixels, which segmentation and the oracle gaze must keep.

All variants are visual only: their per-episode draws come from the episode RNG after the task's own
draws (so the task's randomisation is that of the normal task for the same seed), their objects
are kinematic without collision shapes, and segmentation marks only the task's objects as
targets (the distractors are other actors). `distract` needs CPU physics (one sub-scene): it
changes materials and lights, which the sub-scenes of a GPU-batched sim share.

`task_env_id("PushT-v1", "clutter")` registers (once per process) and returns the id of the
variant, e.g. "PushT-v1-clutter"; with `render_quality="fast"` the class also gets gaze_rl's
level-of-detail meshes (gaze_rl.envs.fast_render), e.g. "PushT-v1-clutter-fastrender".
`EnvSpec(variant=..., render_quality=...)` does this for you (and passes `distract_strength`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, get_args

import numpy as np
import torch

from gaze_rl.envs.spec import DISTRACT_STRENGTH, Variant, check_distract_strength
from gaze_rl.envs.task_objects import TASK_TARGETS, project_points, to_numpy, visual_radius
from gaze_rl.errors import ConfigError

VARIANTS: tuple[str, ...] = get_args(Variant)
# clutter: where its cubes go, in the table frame of ManiSkill's tabletop scenes (metres), and how many.
TABLE_HALF_EXTENT = 0.25
NUM_DISTRACTORS = 6

# distract, at strength 1 (see the module's docstring for how the strength scales them).
DISTRACT_MAX_OBJECTS = 8
LIGHT_GAIN = 0.6  # light and ambient colour gains per channel in [1 - LIGHT_GAIN s, 1 + LIGHT_GAIN s]
LIGHT_MAX_TILT = np.radians(60.0)  # directional lights tilt by up to this times s
# Anchors of distract's objects are drawn in this square of the table (m); those the camera does
# not see, or from which the distractor could cover a task object, are rejected (`_clear_views`).
DISTRACT_HALF_EXTENT = 0.5
KEEP_OUT = 0.03  # added to a distractor's visual radius (m) when keeping it clear of the task objects
CANDIDATES = 64  # anchor candidates drawn per distractor; the first with room is taken, else it sits the episode out
OUT_OF_VIEW = (10.0, 0.0)  # where a distractor without room sits (behind the tasks' cameras)
PATH_AMPLITUDE = 0.06  # moving distractors swing up to this (m) from their anchor along x and y
PATH_RATE = (0.05, 0.2)  # ... at angular rates in this range (rad per control step: periods of 1.6-6 s at 20 Hz)
SPIN_RATE = 0.1  # ... and turn about z at up to this (rad per control step)
TEXTURE_SIDE = 256  # tinted textures are box-downsampled to at most this side (64-128 px frames need no more)


def _visual_actor(scene: Any, name: str, add_visual: Callable[[Any], Any] = lambda builder: None) -> Any:
    """A kinematic actor without collision shapes (invisible to physics) with the visuals that
    `add_visual(builder)` adds."""
    import sapien

    builder = scene.create_actor_builder()
    add_visual(builder)
    builder.initial_pose = sapien.Pose(p=[0.0, 0.0, 0.03])  # placed per episode; a pose here silences ManiSkill's warning
    return builder.build_kinematic(name=name)


def _primitive(kind: int, size: float, material: Any) -> Callable[[Any], Any]:
    """`add_visual` of a box (kind 0), sphere (1) or cylinder lying along x (2) of half-size
    (radius) `size`: each rests on the table with its centre at height `size`."""

    def add_visual(builder: Any) -> Any:
        if kind == 0:
            return builder.add_box_visual(half_size=[size] * 3, material=material)
        if kind == 1:
            return builder.add_sphere_visual(radius=size, material=material)
        return builder.add_cylinder_visual(radius=size, half_length=1.5 * size, material=material)

    return add_visual


def _place(actor: Any, xy: np.ndarray, z: float, q: np.ndarray | None = None) -> None:
    """Poses `actor` in each of its sub-scenes: `xy` (n, 2) table positions at height `z`,
    orientation `q` (n, 4) wxyz quaternions (None = upright)."""
    from mani_skill.utils.structs.pose import Pose

    p = torch.zeros((len(xy), 3), device=actor.device)
    p[:, :2] = torch.as_tensor(np.asarray(xy), dtype=torch.float32, device=actor.device)
    p[:, 2] = z
    q_t = None if q is None else torch.as_tensor(np.asarray(q), dtype=torch.float32, device=actor.device)
    actor.set_pose(Pose.create_from_pq(p=p, q=q_t))


def _materials(actor: Any) -> list[Any]:
    """The render materials of an actor's current render body (fast rendering may have replaced it)."""
    import sapien

    body = actor._objs[0].find_component_by_type(sapien.render.RenderBodyComponent)
    return [] if body is None else [part.material for shape in body.render_shapes for part in shape.get_parts()]


def _clutter_class(base: type, env_id: str) -> type:
    import sapien

    class Clutter(base):
        def _load_scene(self, options: dict):
            super()._load_scene(options)
            rng = np.random.RandomState(0)  # fixed look across instances: colours and sizes
            self._distractors = []
            for i in range(NUM_DISTRACTORS):
                half_size = float(rng.uniform(0.02, 0.04))
                material = sapien.render.RenderMaterial(base_color=[*rng.uniform(0.05, 1.0, 3), 1.0])
                self._distractors.append(_visual_actor(self.scene, f"distractor_{i}", _primitive(0, half_size, material)))

        def _initialize_episode(self, env_idx: torch.Tensor, options: dict):
            super()._initialize_episode(env_idx, options)
            # Drawn after the task's own draws, from the per-episode RNG: the task's
            # randomisation is the same as without clutter.
            rng = self._batched_episode_rng[env_idx]
            xy = rng.uniform(-TABLE_HALF_EXTENT, TABLE_HALF_EXTENT, size=(NUM_DISTRACTORS, 2))
            for i, distractor in enumerate(self._distractors):
                _place(distractor, xy[:, i], 0.03)

    return Clutter


def _lighting_class(base: type, env_id: str) -> type:
    class Lighting(base):
        def _load_lighting(self, options: dict):
            rng = np.random.RandomState(int(self._main_seed[0]) if self._main_seed else 0)
            self.scene.set_ambient_light(list(rng.uniform(0.05, 0.6, 3)))
            for _ in range(2):
                direction = [*rng.uniform(-1, 1, 2), -1.0]
                self.scene.add_directional_light(direction, list(rng.uniform(0.2, 1.6, 3)))

    return Lighting


@dataclass(frozen=True)
class DistractCounts:
    """How many distractors `distract` builds at a strength: `round(8 s)` objects, of which the
    first `round(objects * s)` move; even indices are look-alikes of the task's movable objects,
    odd ones primitives (so both kinds move once two or more move)."""

    objects: int
    moving: int

    @classmethod
    def at(cls, strength: float) -> DistractCounts:
        objects = int(DISTRACT_MAX_OBJECTS * strength + 0.5)
        return cls(objects, int(objects * strength + 0.5))


@dataclass
class _Surface:
    """A table or floor material's own look, which each episode tints: its texture (box-downsampled,
    RGBA in [0, 1]) or, untextured, its base colour."""

    material: Any
    base_color: np.ndarray
    texture: np.ndarray | None = None
    sampling: dict[str, Any] = field(default_factory=dict)  # the texture's mipmaps, filter, addressing and colour space

    @classmethod
    def of(cls, material: Any) -> _Surface:
        base_color = np.asarray(material.base_color, dtype=np.float64)
        texture = material.base_color_texture
        if texture is None:
            return cls(material, base_color)
        pixels = np.asarray(texture.download(), dtype=np.float64)[..., :4] / 255.0
        k = max(1, max(pixels.shape[:2]) // TEXTURE_SIDE)
        h, w = pixels.shape[0] // k * k, pixels.shape[1] // k * k
        small = pixels[:h, :w].reshape(h // k, k, w // k, k, -1).mean(axis=(1, 3))
        sampling = dict(mipmap_levels=texture.mipmap_levels, filter_mode=texture.filter_mode,
                        address_mode=texture.address_mode, srgb=texture.is_srgb)
        return cls(material, base_color, small, sampling)

    def tint(self, color: np.ndarray, strength: float) -> None:
        """Moves the surface's colour towards `color` (RGB in [0, 1]) by `strength`, keeping a
        texture's light and dark pattern (its luminance relative to its mean)."""
        import sapien

        if self.texture is None:
            self.material.base_color = [*((1 - strength) * self.base_color[:3] + strength * color), self.base_color[3]]
            return
        rgb = self.texture[..., :3]
        luminance = rgb.mean(axis=-1, keepdims=True)
        target = color * luminance / max(float(luminance.mean()), 1e-6)
        rgba = np.concatenate([(1 - strength) * rgb + strength * target, self.texture[..., 3:]], axis=-1)
        pixels = np.ascontiguousarray(np.clip(rgba * 255.0 + 0.5, 0, 255).astype(np.uint8))
        self.material.base_color_texture = sapien.render.RenderTexture2D(pixels, "R8G8B8A8Unorm", **self.sampling)


def _tilted(direction: np.ndarray, azimuth: float, angle: float) -> np.ndarray:
    """`direction` (unit) turned by `angle` towards the perpendicular direction at `azimuth`."""
    helper = np.array([0.0, 0.0, 1.0]) if abs(direction[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    u = np.cross(direction, helper)
    u /= np.linalg.norm(u)
    v = np.cross(direction, u)
    return np.cos(angle) * direction + np.sin(angle) * (np.cos(azimuth) * u + np.sin(azimuth) * v)


def _clear_views(eye: np.ndarray, centres: np.ndarray, radii: np.ndarray | float,
                 obstacles: list[tuple[np.ndarray, float]]) -> np.ndarray:
    """Whether spheres at `centres` (..., 3) of `radii` are seen from `eye` (3,) clear of every
    obstacle sphere (centre, radius): their cones of view from the eye do not meet (the angle
    between the centres' rays exceeds the sum of the cones' half-angles), so neither covers the
    other in a camera at `eye` and they do not touch. Exact for spheres, whatever the camera."""

    def cone(centre: np.ndarray, radius: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        ray = centre - eye
        distance = np.linalg.norm(ray, axis=-1)
        return ray / distance[..., None], np.arcsin(np.clip(radius / distance, 0.0, 1.0))

    rays, half_angles = cone(centres, radii)
    clear = np.ones(rays.shape[:-1], dtype=bool)
    for centre, radius in obstacles:
        ray, half_angle = cone(centre, radius)
        clear &= np.arccos(np.clip(rays @ ray, -1.0, 1.0)) > half_angles + half_angle
    return clear


def _yaw_quat(yaw: float, q: np.ndarray) -> np.ndarray:
    """The wxyz quaternion of orientation `q` turned by `yaw` about the world's z axis."""
    from transforms3d.quaternions import qmult

    return qmult([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)], q)


@dataclass
class _Distractor:
    """One of distract's objects: a look-alike of the task object `source`, or a primitive (source
    None) resting at `rest_height`; `radius` is its visual sphere's (for keeping clear of others)."""

    actor: Any
    source: str | None
    rest_height: float
    radius: float


@dataclass
class _Path:
    """A distractor's pose over an episode: at control step t, anchor + PATH_AMPLITUDE * sin(rate t +
    phase) on the table (per axis) at height z, orientation q turned by yaw + spin t about z."""

    actor: Any
    anchor: np.ndarray
    z: float
    q: np.ndarray
    yaw: float
    rate: np.ndarray
    phase: np.ndarray
    spin: float

    def place(self, t: int) -> None:
        xy = self.anchor + PATH_AMPLITUDE * np.sin(self.rate * t + self.phase)
        _place(self.actor, xy[None], self.z, _yaw_quat(self.yaw + self.spin * t, self.q)[None])


def _distract_class(base: type, env_id: str) -> type:
    import sapien

    if env_id not in TASK_TARGETS:
        raise ConfigError(f"variant 'distract' needs the task's objects (to copy and to keep clear of); they are known "
                          f"for {', '.join(TASK_TARGETS)}, not {env_id}: add {env_id} to TASK_TARGETS "
                          "(gaze_rl/envs/task_objects.py) or use variant 'clutter'")
    targets = TASK_TARGETS[env_id]
    movable = [name for name in targets if not name.startswith("goal")]

    class Distract(base):
        def __init__(self, *args: Any, distract_strength: float = DISTRACT_STRENGTH, **kwargs: Any):
            check_distract_strength(distract_strength)
            if kwargs.get("num_envs", 1) != 1:
                raise ConfigError("variant 'distract' changes materials and lights per episode, which the sub-scenes "
                                  "of a GPU-batched sim share: use sim_backend physx_cpu (one env per process)")
            self.distract_strength = distract_strength
            self.distract_counts = DistractCounts.at(distract_strength)
            self._moving: list[_Path] = []
            super().__init__(*args, **kwargs)

        def _load_scene(self, options: dict):
            super()._load_scene(options)
            rng = np.random.RandomState(0)  # primitives' kinds and sizes: the same across instances
            self._distractors: list[_Distractor] = []
            for i in range(self.distract_counts.objects):
                if i % 2 == 0:
                    source = movable[(i // 2) % len(movable)]
                    actor = self._lookalike(self.scene.actors[source], f"distract_{i}_{source}")
                    self._distractors.append(_Distractor(actor, source, 0.0, visual_radius(actor)))
                    continue
                kind, size = int(rng.randint(3)), float(rng.uniform(0.015, 0.04))
                material = sapien.render.RenderMaterial(base_color=[0.5, 0.5, 0.5, 1.0])  # coloured per episode
                actor = _visual_actor(self.scene, f"distract_{i}", _primitive(kind, size, material))
                self._distractors.append(_Distractor(actor, None, size, visual_radius(actor)))
            self._target_radii = {name: visual_radius(self.scene.actors[name]) for name in targets}
            self._surfaces: list[_Surface] | None = None  # read from the rendered scene at the first episode

        def _lookalike(self, source: Any, name: str) -> Any:
            """A visual-only copy of a task object: its render shapes (meshes, colours, sizes)."""
            actor = _visual_actor(self.scene, name)
            for entity, source_entity in zip(actor._objs, source._objs):
                body = source_entity.find_component_by_type(sapien.render.RenderBodyComponent)
                if body is not None:
                    copy = sapien.render.RenderBodyComponent()
                    for shape in body.render_shapes:
                        copy.attach(shape.clone())
                    entity.add_component(copy)
            return actor

        def _load_lighting(self, options: dict):
            super()._load_lighting(options)
            self._ambient = np.asarray(self.scene.ambient_light, dtype=np.float64)
            self._lights = [(light, np.asarray(light.color, dtype=np.float64), light.pose)
                            for entity in self.scene.sub_scenes[0].entities for light in entity.components
                            if isinstance(light, sapien.render.RenderDirectionalLightComponent)]

        def _initialize_episode(self, env_idx: torch.Tensor, options: dict):
            super()._initialize_episode(env_idx, options)
            s = self.distract_strength
            self._moving = []
            if s == 0:
                return
            # Drawn after the task's own draws, from the per-episode RNG: the task's randomisation
            # is that of the normal task. Every draw has a fixed size, whatever the scene.
            rng = self._batched_episode_rng[int(env_idx[0])]
            if self._surfaces is None:
                table, ground = self.table_scene.table, self.table_scene.ground
                self._surfaces = [_Surface.of(m) for actor in (table, ground) for m in _materials(actor)]
            for surface, color in zip(self._surfaces, rng.uniform(0, 1, (len(self._surfaces), 3))):
                surface.tint(color, s)
            self._jitter_lights(rng, s)
            self._place_distractors(rng)

        def _jitter_lights(self, rng: np.random.RandomState, s: float) -> None:
            gains = rng.uniform(1 - LIGHT_GAIN * s, 1 + LIGHT_GAIN * s, (len(self._lights) + 1, 3))
            azimuths = rng.uniform(0, 2 * np.pi, len(self._lights))
            tilts = rng.uniform(0, LIGHT_MAX_TILT * s, len(self._lights))
            self.scene.ambient_light = list(self._ambient * gains[0])
            for (light, color, pose), gain, azimuth, tilt in zip(self._lights, gains[1:], azimuths, tilts):
                light.color = list(color * gain)
                direction = _tilted(pose.to_transformation_matrix()[:3, 0], azimuth, tilt)
                light.pose = sapien.Pose(pose.p, sapien.math.shortest_rotation([1, 0, 0], direction))

        def _place_distractors(self, rng: np.random.RandomState) -> None:
            """Each distractor at the first of its candidate anchors that the camera sees and from
            which (along its whole path) it can neither cover nor touch a task object where that
            starts or the goal; with none, it sits the episode out of view."""
            n, moving = len(self._distractors), self.distract_counts.moving
            candidates = rng.uniform(-DISTRACT_HALF_EXTENT, DISTRACT_HALF_EXTENT, (n, CANDIDATES, 2))
            yaws = rng.uniform(0, 2 * np.pi, n)
            colors = rng.uniform(0, 1, (n, 3))
            rates = rng.uniform(*PATH_RATE, (n, 2)) * rng.choice([-1.0, 1.0], (n, 2))
            phases = rng.uniform(0, 2 * np.pi, (n, 2))
            spins = rng.uniform(-SPIN_RATE, SPIN_RATE, n)
            camera = next(iter(self.scene.sensors.values()))
            params = camera.get_params()
            intrinsic, extrinsic = to_numpy(params["intrinsic_cv"])[0], to_numpy(params["extrinsic_cv"])[0]
            eye = -extrinsic[:3, :3].T @ extrinsic[:3, 3]
            targets_now = [(to_numpy(self.scene.actors[name].pose.p)[0], radius) for name, radius in self._target_radii.items()]
            for i, distractor in enumerate(self._distractors):
                if distractor.source is not None:  # a look-alike: the task object's height and tilt, turned about z
                    source = self.scene.actors[distractor.source].pose
                    z, q = float(to_numpy(source.p)[0, 2]), to_numpy(source.q)[0].astype(np.float64)
                else:
                    z, q = distractor.rest_height, np.array([1.0, 0.0, 0.0, 0.0])
                    for material in _materials(distractor.actor):
                        material.base_color = [*colors[i], 1.0]
                centres = np.concatenate([candidates[i], np.full((CANDIDATES, 1), z)], axis=1)
                uv = project_points(centres, intrinsic, extrinsic)
                in_view = (uv >= 0).all(axis=1) & (uv[:, 0] < camera.config.width) & (uv[:, 1] < camera.config.height)
                swing = PATH_AMPLITUDE * np.sqrt(2) if i < moving else 0.0
                fits = in_view & _clear_views(eye, centres, distractor.radius + swing + KEEP_OUT, targets_now)
                anchor = candidates[i][int(np.argmax(fits))] if fits.any() else np.array(OUT_OF_VIEW)
                path = _Path(distractor.actor, anchor, z, q, yaws[i], rates[i], phases[i], spins[i])
                path.place(0)
                if i < moving and fits.any():
                    self._moving.append(path)

        def _after_control_step(self):
            super()._after_control_step()
            t = int(self._elapsed_steps[0]) + 1  # ManiSkill counts this step after its control step
            for path in self._moving:
                path.place(t)

    return Distract


def _named(cls: type, name: str) -> type:
    cls.__name__ = cls.__qualname__ = name
    return cls


_BUILDERS: dict[str, Callable[[type, str], type]] = {
    "clutter": _clutter_class, "lighting": _lighting_class, "distract": _distract_class,
}


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
        cls = _named(_BUILDERS[variant](cls, env_id), f"{cls.__name__}{variant.capitalize()}")
    if render_quality == "fast":
        cls = _named(fast_render_class(cls), f"{cls.__name__}FastRender")
    register_env(new_id, max_episode_steps=REGISTERED_ENVS[env_id].max_episode_steps)(cls)
    return new_id
