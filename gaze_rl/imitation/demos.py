"""Demonstrations for imitation pretraining: generated offline with ManiSkill3's motion-planning
solutions, or converted from ManiSkill trajectory files a user already has, then re-rendered in
the RL env (rgb + state, plus segmentation on the side) in the RL control mode.

Pipeline (`gaze-rl demos`):
1. plan: ManiSkill's own solution for the task (`mani_skill.examples.motionplanning.panda`)
   drives a `pd_joint_pos` env; ManiSkill's `RecordEpisode` writes the standard trajectory file
   `<out>/raw/motionplanning.h5` (+ `.json`). Plans that raise, return -1 or do not end in
   success are dropped and counted.
2. replay: each trajectory is replayed from its seed in `make_segmented_env` (the RL env with
   `obs_mode="rgb+segmentation"`), converting actions to the RL control mode with ManiSkill's
   `from_pd_joint_pos` (the converter `replay_trajectory -c` uses). Replays that do not end in
   success are dropped and counted.
3. write `<out>/demos.h5` (format below) and `<out>/meta.json` (counts, seeds, settings).

`gaze-rl demos --from-h5 FILE.h5` skips step 1 for a ManiSkill trajectory file (its `.json`
beside it gives the task, seeds and control mode).

demos.h5: file attributes `format`, `env_id`, `control_mode`, `image_size`, `include_state`,
`cameras` (JSON list), `segmentation_names` (JSON {id: name}), `action_low`, `action_high`; one group `traj_<i>` per
demonstration of T steps with
`obs/rgb` (T+1, H, W, 3 * cameras) uint8, `obs/state` (T+1, D) float32, `actions` (T, A),
`rewards` (T,), `success` (T,), `segmentation/<camera>` (T+1, H, W) int16,
`camera/<camera>/intrinsic` (T+1, 3, 3), `camera/<camera>/extrinsic` (T+1, 3, 4),
`actors/<name>` (T+1, 3) world positions; attributes `seed`, `source_episode_id`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import gymnasium as gym
import h5py
import numpy as np

from gaze_rl.configuration.commands import DemosConfig
from gaze_rl.errors import ConfigError
from gaze_rl.segmentation.envs import Frame, make_segmented_env, segmentation_names

FORMAT = "gaze_rl.demos/1"
DEFAULT_NUM = 10  # demonstrations generated when --num is not given
SOURCE_CONTROL_MODE = "source"  # keep the demonstration's own control mode
# Control-mode conversions ManiSkill's converter supports (source -> targets).
CONVERSIONS = {
    "pd_joint_pos": ("pd_joint_delta_pos", "pd_joint_target_delta_pos", "pd_joint_vel", "pd_ee_delta_pos",
                     "pd_ee_delta_pose", "pd_ee_target_delta_pos", "pd_ee_target_delta_pose", "pd_ee_pose"),
    "pd_joint_delta_pos": ("pd_joint_pos",),
}


def _conversions_text() -> str:
    return "; ".join(f"{source} -> {', '.join(targets)}" for source, targets in CONVERSIONS.items())


# Time limit of the recording env: never truncates a demonstration.
_RECORDING_STEPS = 10_000


def motion_planning_solutions() -> dict[str, Callable]:
    """ManiSkill3's motion-planning solutions, task id -> solve(env, seed, debug, vis)."""
    from mani_skill.examples.motionplanning.panda.run import MP_SOLUTIONS

    return dict(MP_SOLUTIONS)


@dataclass
class Demo:
    """One demonstration of T steps (observations include the final one, T + 1)."""

    rgb: np.ndarray
    """(T+1, H, W, C) uint8 frames as the RL env returns them (channel-last)."""
    state: np.ndarray
    """(T+1, D) float32 flattened proprioception / task state (D = 0 without state)."""
    actions: np.ndarray
    """(T, A) float32 actions in the file's control mode."""
    rewards: np.ndarray
    """(T,) float32 rewards of the task's default reward mode."""
    success: np.ndarray
    """(T,) bool success after each step."""
    segmentation: dict[str, np.ndarray]
    """camera -> (T+1, H, W) int16 segmentation ids."""
    intrinsic: dict[str, np.ndarray]
    """camera -> (T+1, 3, 3) OpenCV intrinsics."""
    extrinsic: dict[str, np.ndarray]
    """camera -> (T+1, 3, 4) OpenCV extrinsics (world -> camera)."""
    actor_positions: dict[str, np.ndarray]
    """actor name -> (T+1, 3) world positions."""
    seed: int = -1
    """Env seed that reproduces the demonstration with reset(seed=seed)."""
    source_episode_id: int = -1
    """Episode id in the ManiSkill trajectory file it came from."""

    def __len__(self) -> int:
        return len(self.actions)


@dataclass
class DemoSet:
    """Demonstrations of one task, one control mode and one image size."""

    demos: list[Demo]
    env_id: str
    control_mode: str
    image_size: int
    include_state: bool
    cameras: list[str]
    segmentation_names: dict[int, str]
    action_low: np.ndarray | None = None
    action_high: np.ndarray | None = None
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.demos)

    @property
    def num_steps(self) -> int:
        return sum(len(d) for d in self.demos)


@dataclass
class ReplayStats:
    """Counts of one generation / conversion."""

    requested: int = 0
    written: int = 0
    failed_plans: int = 0
    failed_replays: int = 0
    seeds: list[int] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)


class _Recorder(gym.Wrapper):
    """Records observations, the SegmentationTap's frames, actions, rewards and success."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self._clear()

    def _clear(self) -> None:
        self.observations: list[dict[str, np.ndarray]] = []
        self.frames: list[Frame] = []
        self.actions: list[np.ndarray] = []
        self.rewards: list[float] = []
        self.success: list[bool] = []

    def _keep(self, obs: dict[str, np.ndarray]) -> None:
        self.observations.append({k: np.array(v) for k, v in obs.items()})
        self.frames.append(self.env.get_wrapper_attr("frame"))

    def reset(self, **kwargs: Any):
        self._clear()
        obs, info = self.env.reset(**kwargs)
        self._keep(obs)
        return obs, info

    def step(self, action):
        action = np.asarray(action.detach().cpu() if hasattr(action, "detach") else action, dtype=np.float32)
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.actions.append(action.reshape(-1))
        self.rewards.append(float(reward))
        self.success.append(bool(info.get("success", False)))
        self._keep(obs)
        return obs, reward, terminated, truncated, info

    def demo(self, seed: int, episode_id: int) -> Demo:
        cameras = list(self.frames[0].segmentation)
        actors = list(self.frames[0].actor_positions)
        state = (np.stack([o["state"] for o in self.observations]).astype(np.float32)
                 if "state" in self.observations[0] else np.zeros((len(self.observations), 0), np.float32))
        return Demo(
            rgb=np.stack([o["rgb"] for o in self.observations]).astype(np.uint8),
            state=state,
            actions=np.stack(self.actions).astype(np.float32),
            rewards=np.asarray(self.rewards, np.float32),
            success=np.asarray(self.success, bool),
            segmentation={c: np.stack([f.segmentation[c] for f in self.frames]).astype(np.int16) for c in cameras},
            intrinsic={c: np.stack([f.intrinsic[c] for f in self.frames]).astype(np.float32) for c in cameras},
            extrinsic={c: np.stack([f.extrinsic[c] for f in self.frames]).astype(np.float32) for c in cameras},
            actor_positions={a: np.stack([f.actor_positions[a] for f in self.frames]).astype(np.float32)
                             for a in actors},
            seed=seed, source_episode_id=episode_id,
        )


class Replayer:
    """Replays ManiSkill trajectories (actions from a seed) in the recording env, converting the
    control mode when asked; one instance per (task, source mode, target mode, image size)."""

    def __init__(self, env_id: str, source_control_mode: str, control_mode: str, image_size: int,
                 include_state: bool = True):
        target = source_control_mode if control_mode == SOURCE_CONTROL_MODE else control_mode
        if target != source_control_mode and target not in CONVERSIONS.get(source_control_mode, ()):
            raise ConfigError(
                f"cannot convert demonstrations from {source_control_mode!r} to {target!r} (ManiSkill converts "
                f"{_conversions_text()}); pass "
                f"--control-mode source to keep {source_control_mode!r}, and train RL with "
                f"--control-mode {source_control_mode}"
            )
        self.env_id, self.source_control_mode, self.control_mode = env_id, source_control_mode, target
        self.env = _Recorder(make_segmented_env(env_id, image_size=image_size, control_mode=target,
                                                include_state=include_state, monitor=False,
                                                max_episode_steps=_RECORDING_STEPS))
        self.source_env = None
        if target != source_control_mode:
            import mani_skill.envs  # noqa: F401

            self.source_env = gym.make(env_id, obs_mode="none", control_mode=source_control_mode,
                                       sim_backend="physx_cpu", max_episode_steps=_RECORDING_STEPS)
        self.segmentation_names = segmentation_names(self.env)
        self.cameras = list(self.env.unwrapped.scene.sensors)
        self.action_low = np.asarray(self.env.action_space.low, np.float32)
        self.action_high = np.asarray(self.env.action_space.high, np.float32)

    def demo_set(self, demos: list[Demo], image_size: int, include_state: bool) -> DemoSet:
        return DemoSet(demos, self.env_id, self.control_mode, image_size, include_state, self.cameras,
                       self.segmentation_names, self.action_low, self.action_high)

    def replay(self, actions: np.ndarray, seed: int, episode_id: int = -1,
               reset_kwargs: dict[str, Any] | None = None) -> Demo | None:
        """Replays one trajectory; the Demo if it ends in success, else None."""
        from mani_skill.trajectory.utils.actions import conversion

        reset_kwargs = {**(reset_kwargs or {}), "seed": seed}
        self.env.reset(**reset_kwargs)
        if self.source_env is None:
            for action in actions:
                self.env.step(action)
        else:
            self.source_env.reset(**reset_kwargs)
            convert = (conversion.from_pd_joint_pos if self.source_control_mode == "pd_joint_pos"
                       else conversion.from_pd_joint_delta_pos)
            convert(self.control_mode, np.asarray(actions), self.source_env, self.env)
        if not self.env.success or not self.env.success[-1]:
            return None
        return self.env.demo(seed, episode_id)

    def close(self) -> None:
        self.env.close()
        if self.source_env is not None:
            self.source_env.close()


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, dynamic_ncols=True)


def plan_and_replay(cfg: DemosConfig, out: Path) -> tuple[DemoSet, ReplayStats]:
    """Generates `cfg.num` successful demonstrations with ManiSkill's motion planner."""
    import mani_skill.envs  # noqa: F401
    from mani_skill.utils.wrappers.record import RecordEpisode

    assert cfg.env_id is not None  # DemosConfig: --env-id or --from-h5
    solutions = motion_planning_solutions()
    solve = solutions[cfg.env_id]
    num = cfg.num if cfg.num is not None else DEFAULT_NUM
    max_attempts = cfg.max_attempts or 2 * num + 10
    planner_env = RecordEpisode(
        gym.make(cfg.env_id, obs_mode="none", control_mode="pd_joint_pos", render_mode="rgb_array",
                 sim_backend="physx_cpu"),
        output_dir=str(out / "raw"), trajectory_name="motionplanning", save_video=False,
        source_type="motionplanning", source_desc="ManiSkill3 motion-planning solution (gaze-rl demos)",
        record_reward=False, save_on_reset=False,
    )
    replayer = Replayer(cfg.env_id, "pd_joint_pos", cfg.control_mode, cfg.image_size, cfg.include_state)
    stats, demos = ReplayStats(requested=num), cast("list[Demo]", [])
    bar = _progress(num, f"demos {cfg.env_id}", cfg.progress_bar)
    try:
        for seed in range(cfg.seed, cfg.seed + max_attempts):
            if len(demos) == num:
                break
            try:
                result = solve(planner_env, seed=seed, debug=False, vis=False)
            except Exception as err:  # ManiSkill's runner treats any planner error as a failed plan
                print(f"seed {seed}: motion planning raised {type(err).__name__}: {err}", file=sys.stderr)
                result = -1
            if result == -1 or not bool(np.asarray(result[-1]["success"]).reshape(-1)[0]):
                stats.failed_plans += 1
                planner_env.flush_trajectory(save=False)
                bar.set_postfix(failed_plans=stats.failed_plans, failed_replays=stats.failed_replays)
                continue
            planner_env.flush_trajectory()
            episode_id = planner_env._episode_id
            actions = planner_env._h5_file[f"traj_{episode_id}"]["actions"][:]
            demo = replayer.replay(actions, seed, episode_id)
            if demo is None:
                stats.failed_replays += 1
            else:
                demos.append(demo)
                stats.seeds.append(seed)
                stats.lengths.append(len(demo))
                bar.update(1)
            bar.set_postfix(failed_plans=stats.failed_plans, failed_replays=stats.failed_replays)
    finally:
        bar.close()
        planner_env.close()
        replayer.close()
    if len(demos) < num:
        raise RuntimeError(
            f"only {len(demos)} of {num} demonstrations succeeded in {max_attempts} seeds "
            f"({stats.failed_plans} failed plans, {stats.failed_replays} failed replays); raise --max-attempts"
        )
    stats.written = len(demos)
    return replayer.demo_set(demos, cfg.image_size, cfg.include_state), stats


def read_maniskill_trajectories(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Checks a ManiSkill trajectory file (.h5 + .json) and returns (env_info, episodes).

    Each returned episode has `episode_id`, `seed`, `control_mode`, `reset_kwargs`, `actions`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"trajectory file {path} does not exist")
    json_path = path.with_suffix(".json")
    if not json_path.is_file():
        raise ConfigError(
            f"{path} has no {json_path.name} beside it; ManiSkill writes one with every trajectory file "
            "(it holds the task id, seeds and control mode): copy it next to the .h5"
        )
    meta = json.loads(json_path.read_text())
    env_info = meta.get("env_info") or {}
    if "env_id" not in env_info or "episodes" not in meta:
        raise ConfigError(f"{json_path} lacks env_info.env_id or episodes; it is not a ManiSkill trajectory json")
    default_mode = (env_info.get("env_kwargs") or {}).get("control_mode") or "pd_joint_pos"
    episodes = []
    with h5py.File(path, "r") as f:
        for episode in meta["episodes"]:
            traj = f"traj_{episode['episode_id']}"
            if traj not in f or "actions" not in f[traj]:
                raise ConfigError(
                    f"{path} has no {traj}/actions (listed in {json_path.name}); gaze-rl replays actions "
                    "from each episode's seed, so the file needs them (ManiSkill's RecordEpisode writes them)"
                )
            if isinstance(f[traj]["actions"], h5py.Group):
                raise ConfigError(f"{path}: {traj}/actions is a dict of actions (multi-agent); only flat "
                                 "action vectors are supported")
            reset_kwargs = dict(episode.get("reset_kwargs") or {})
            seed = reset_kwargs.pop("seed", episode.get("episode_seed"))
            if isinstance(seed, list):
                seed = seed[0]
            if seed is None:
                raise ConfigError(f"{json_path}: episode {episode['episode_id']} has no episode_seed or "
                                 "reset_kwargs.seed; without it the episode cannot be replayed")
            episodes.append(dict(episode_id=int(episode["episode_id"]), seed=int(seed),
                                 control_mode=episode.get("control_mode") or default_mode,
                                 reset_kwargs=reset_kwargs, actions=f[traj]["actions"][:]))
    if not episodes:
        raise ConfigError(f"{json_path} lists no episodes")
    return env_info, episodes


def convert_trajectories(cfg: DemosConfig, path: Path) -> tuple[DemoSet, ReplayStats]:
    """Replays a ManiSkill trajectory file into demonstrations (at most cfg.num; None = all)."""
    env_info, episodes = read_maniskill_trajectories(path)
    env_id = env_info["env_id"]
    if cfg.env_id and cfg.env_id != env_id:
        raise ConfigError(f"{path} holds {env_id} trajectories but --env-id is {cfg.env_id}; drop --env-id "
                         "or pass the matching one")
    modes = {e["control_mode"] for e in episodes}
    if len(modes) > 1:
        raise ConfigError(f"{path} mixes control modes {sorted(modes)}; split it per control mode")
    replayer = Replayer(env_id, modes.pop(), cfg.control_mode, cfg.image_size, cfg.include_state)
    wanted = min(cfg.num, len(episodes)) if cfg.num is not None else len(episodes)
    stats, demos = ReplayStats(requested=wanted), cast("list[Demo]", [])
    bar = _progress(wanted, f"replay {env_id}", cfg.progress_bar)
    try:
        for episode in episodes:
            if len(demos) == wanted:
                break
            demo = replayer.replay(episode["actions"], episode["seed"], episode["episode_id"],
                                   episode["reset_kwargs"])
            if demo is None:
                stats.failed_replays += 1
            else:
                demos.append(demo)
                stats.seeds.append(episode["seed"])
                stats.lengths.append(len(demo))
                bar.update(1)
            bar.set_postfix(failed_replays=stats.failed_replays)
    finally:
        bar.close()
        replayer.close()
    if not demos:
        raise RuntimeError(f"none of the replayed trajectories of {path} ended in success; nothing to write")
    stats.written = len(demos)
    return replayer.demo_set(demos, cfg.image_size, cfg.include_state), stats


def write_demos(demo_set: DemoSet, path: Path) -> None:
    """Writes a DemoSet as demos.h5 (format in this module's docstring)."""
    gzip = dict(compression="gzip", compression_opts=4)
    with h5py.File(path, "w") as f:
        f.attrs.update(format=FORMAT, env_id=demo_set.env_id, control_mode=demo_set.control_mode,
                       image_size=demo_set.image_size, include_state=demo_set.include_state,
                       cameras=json.dumps(demo_set.cameras),
                       segmentation_names=json.dumps({str(k): v for k, v in demo_set.segmentation_names.items()}),
                       action_low=demo_set.action_low, action_high=demo_set.action_high)
        for i, demo in enumerate(demo_set.demos):
            g = f.create_group(f"traj_{i}")
            g.attrs.update(seed=demo.seed, source_episode_id=demo.source_episode_id)
            g.create_dataset("obs/rgb", data=demo.rgb, **gzip)
            g.create_dataset("obs/state", data=demo.state)
            for name in ("actions", "rewards", "success"):
                g.create_dataset(name, data=getattr(demo, name))
            for camera in demo.segmentation:
                g.create_dataset(f"segmentation/{camera}", data=demo.segmentation[camera], **gzip)
                g.create_dataset(f"camera/{camera}/intrinsic", data=demo.intrinsic[camera])
                g.create_dataset(f"camera/{camera}/extrinsic", data=demo.extrinsic[camera])
            for actor, positions in demo.actor_positions.items():
                g.create_dataset(f"actors/{actor}", data=positions)


def demos_file(path: Path) -> Path:
    """demos.h5 inside a demos directory, or the file itself."""
    path = Path(path)
    return path / "demos.h5" if path.is_dir() else path


_REQUIRED = ("obs/rgb", "obs/state", "actions", "success", "segmentation", "camera", "actors")


def load_demos(path: Path) -> DemoSet:
    """Reads demonstrations written by `gaze-rl demos` (a directory or its demos.h5)."""
    file = demos_file(path)
    if not file.is_file():
        raise FileNotFoundError(f"no demonstrations at {path}; write them with `gaze-rl demos --out {path}`")
    with h5py.File(file, "r") as f:
        if f.attrs.get("format") != FORMAT:
            looks_raw = any(k.startswith("traj_") and "actions" in f[k] and "obs" not in f[k] for k in f)
            hint = (f"it looks like a ManiSkill trajectory file without rendered observations: convert it with "
                    f"`gaze-rl demos --from-h5 {file} --out DIR`" if looks_raw else
                    "write demonstrations with `gaze-rl demos --out DIR` (or convert ManiSkill trajectories "
                    "with `gaze-rl demos --from-h5 FILE.h5 --out DIR`)")
            raise ConfigError(f"{file} is not a gaze_rl demonstrations file (format {FORMAT}); {hint}")
        cameras = json.loads(f.attrs["cameras"])
        demos = []
        for key in sorted((k for k in f if k.startswith("traj_")), key=lambda k: int(k.split("_")[1])):
            g = f[key]
            missing = [k for k in _REQUIRED if k not in g]
            if missing:
                raise ConfigError(f"{file}: {key} lacks {missing}; the file is incomplete, regenerate it with "
                                 "`gaze-rl demos`")
            demos.append(Demo(
                rgb=g["obs/rgb"][:], state=g["obs/state"][:], actions=g["actions"][:],
                rewards=g["rewards"][:] if "rewards" in g else np.zeros(len(g["actions"]), np.float32),
                success=g["success"][:],
                segmentation={c: g[f"segmentation/{c}"][:] for c in g["segmentation"]},
                intrinsic={c: g[f"camera/{c}/intrinsic"][:] for c in g["camera"]},
                extrinsic={c: g[f"camera/{c}/extrinsic"][:] for c in g["camera"]},
                actor_positions={a: g[f"actors/{a}"][:] for a in g["actors"]},
                seed=int(g.attrs.get("seed", -1)), source_episode_id=int(g.attrs.get("source_episode_id", -1)),
            ))
        if not demos:
            raise ConfigError(f"{file} holds no demonstrations")
        return DemoSet(demos, str(f.attrs["env_id"]), str(f.attrs["control_mode"]), int(f.attrs["image_size"]),
                       bool(f.attrs["include_state"]), cameras,
                       {int(k): v for k, v in json.loads(f.attrs["segmentation_names"]).items()},
                       np.asarray(f.attrs["action_low"], np.float32), np.asarray(f.attrs["action_high"], np.float32),
                       path=file)
