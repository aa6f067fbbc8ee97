"""Which return label sees the outcome? (issue 23) Each label of gaze_rl.contrastive.labels on
real ManiSkill episodes, against the episode's success, a start-state confound and time.

Episodes: PushCube-v1 from 64 px (`make_single_env`, end-effector control, success ends the
episode, 50 steps at most) driven by a scripted, noisy pusher that reads the privileged state
(tcp, cube and goal positions): it moves the tcp above a point behind the cube, descends, then
pushes towards the goal, at a speed drawn per episode, aimed off-centre by a per-episode offset,
with Gaussian action noise, so that some episodes succeed and some run out of time.

Every label is computed by the registry's own function (RETURN_LABELS) on a FeatureBuffer
holding the episodes' columns, for each discount of `--discounts` (the label discount,
ContrastiveConfig.return_discount; PushCube's PPO preset uses gamma 0.8). Per label we report
Spearman's rho (average ranks for ties) over all states, as mining sees them, with

* `success`: the state's episode succeeded (1) or not (0);
* `start_tcp_push`: the distance from the tcp to the pushing pose behind the cube at reset
  (what the first rewards of PushCube's dense reward measure: a start-state confound);
* `start_cube_goal`: the cube-goal distance at reset (the confound the issue names; constant
  0.2 m on PushCube-v1, whose goal is always 0.1 + goal_radius in front of the cube, so NaN);
* `step`: the step index (what a return-to-go mostly measures);

and, per episode (the label of its first state), rho with success (`success_ep`).

    python benchmarks/label_quality.py --episodes 60 --out results/signal/label_quality-cpu2.json
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

from gaze_rl.contrastive.buffer import FeatureBuffer
from gaze_rl.contrastive.labels import RETURN_LABELS
from gaze_rl.contrastive.returns import episode_labels, episode_success

from _common import print_table, write_result

ENV_ID = "PushCube-v1"


class NoisyPusher:
    """Scripted PushCube-v1 policy from the privileged state (pd_ee_delta_pos: 3 tcp deltas in
    units of 0.1 m, then the gripper). Per episode: a speed in `speed` and an aim offset
    ~ N(0, aim_noise) m sideways of the cube's centre; per step: N(0, action_noise) on the deltas."""

    def __init__(self, rng: np.random.Generator, action_noise: float, speed: tuple[float, float], aim_noise: float):
        self.rng, self.action_noise, self.speed_range, self.aim_noise = rng, action_noise, speed, aim_noise

    def reset(self) -> None:
        self.phase = 0  # 0: above the point behind the cube, 1: down to it, 2: push
        self.speed = float(self.rng.uniform(*self.speed_range))
        self.aim = float(self.rng.normal(0.0, self.aim_noise))

    def __call__(self, task: Any) -> np.ndarray:
        tcp, cube, goal = (x.pose.p[0].cpu().numpy() for x in (task.agent.tcp, task.obj, task.goal_region))
        behind = cube + np.array([-0.045, self.aim, 0.0])
        target = behind
        if self.phase == 0:
            target = behind + np.array([0.0, 0.0, 0.05])
            if np.linalg.norm((target - tcp)[:2]) < 0.01:
                self.phase = 1
        if self.phase == 1:
            target = behind
            if abs(tcp[2] - cube[2]) < 0.01:
                self.phase = 2
        if self.phase == 2:
            target = np.array([goal[0] + 0.02, cube[1] + self.aim, cube[2]])
        delta = np.clip((target - tcp) / 0.1 * 3.0 * self.speed, -self.speed, self.speed)
        delta = delta + self.rng.normal(0.0, self.action_noise, 3)
        return np.clip(np.concatenate([delta, [-1.0]]), -1.0, 1.0).astype(np.float32)


def start_state(task: Any) -> dict[str, float]:
    """The start-state confounds at reset (privileged state)."""
    tcp, cube, goal = (x.pose.p[0].cpu().numpy() for x in (task.agent.tcp, task.obj, task.goal_region))
    push_pose = cube + np.array([-task.cube_half_size - 0.005, 0.0, 0.0])  # as PushCube's dense reward
    # rounded to 0.1 mm: float32 noise in a constant distance must not rank episodes
    return {"start_cube_goal": round(float(np.linalg.norm((cube - goal)[:2])), 4),
            "start_tcp_push": round(float(np.linalg.norm(push_pose - tcp)), 4)}


def collect(episodes: int, seed: int, action_noise: float = 0.4, speed: tuple[float, float] = (0.1, 0.55),
            aim_noise: float = 0.012, frames: bool = False,
            mask_groups: dict[str, Sequence[str]] | None = None) -> tuple[list[dict[str, Any]], float]:
    """Runs the pusher for `episodes` episodes (reset seeds seed, seed + 1, ...); returns them
    and the seconds per env step. With `frames`, each episode also has the 64 px rgb frames
    the actions were taken from (`rgb`, (T, 64, 64, 3) uint8) and their task-relevant pixels
    (`masks`, (T, 64, 64) bool: cube and goal, gaze_rl.segmentation), from the same env stack
    rendering segmentation on the side), the tcp's and the cube's world positions (`tcp`, `cube`,
    (T, 3)), and per name of `mask_groups` the pixels of those actors or links (`mask_<name>`)."""
    settings = dict(image_size=64, include_state=True, control_mode="pd_ee_delta_pos", reward_scale=1.0,
                    ignore_terminations=False)
    targets = None
    if frames:
        from gaze_rl.segmentation.envs import make_segmented_env, segmentation_names
        from gaze_rl.segmentation.targets import TaskTargets

        env = make_segmented_env(ENV_ID, **settings)  # type: ignore[arg-type]
        names, actors = segmentation_names(env), list(env.unwrapped.scene.actors)
        targets = TaskTargets(ENV_ID, names, actors)
        groups = {name: TaskTargets(ENV_ID, names, actors, group) for name, group in (mask_groups or {}).items()}
    else:
        from gaze_rl.envs.single import make_single_env

        env = make_single_env(ENV_ID, **settings)  # type: ignore[arg-type]
    policy = NoisyPusher(np.random.default_rng(seed), action_noise, speed, aim_noise)
    out, steps, start = [], 0, time.perf_counter()
    try:
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed + episode)
            policy.reset()
            record: dict[str, Any] = {**start_state(env.unwrapped), "rewards": []}
            columns: dict[str, list[np.ndarray]] = {}
            while True:
                if targets is not None:
                    frame, task = env.get_wrapper_attr("frame"), env.unwrapped
                    row = {"rgb": obs["rgb"].copy(), "masks": targets.frame_mask(frame),
                           "tcp": task.agent.tcp.pose.p[0].cpu().numpy(), "cube": task.obj.pose.p[0].cpu().numpy(),
                           **{f"mask_{name}": group.frame_mask(frame) for name, group in groups.items()}}
                    for key, value in row.items():
                        columns.setdefault(key, []).append(value)
                obs, reward, terminated, truncated, info = env.step(policy(env.unwrapped))
                record["rewards"].append(float(reward))
                steps += 1
                if terminated or truncated:
                    break
            record["success"] = episode_success(info)
            record.update({key: np.stack(values) for key, values in columns.items()})
            out.append(record)
    finally:
        env.close()
    return out, (time.perf_counter() - start) / max(steps, 1)


def label_buffer(episodes: list[dict[str, Any]], discount: float) -> FeatureBuffer:
    """A FeatureBuffer (with dummy 1x1x1 features) holding every state's label columns."""
    labels = [episode_labels(np.asarray(ep["rewards"]), discount, i, ep["success"]) for i, ep in enumerate(episodes)]
    n = sum(len(lab.to_go) for lab in labels)
    buf = FeatureBuffer(n, (1, 1, 1), 1, dtype=torch.float32)

    def cat(name: str, dtype: torch.dtype) -> torch.Tensor:
        return torch.as_tensor(np.concatenate([getattr(lab, name) for lab in labels])).to(dtype)

    buf.add(torch.zeros(n, 1, 1, 1), torch.zeros(n, 1), cat("to_go", torch.float32), cat("episode", torch.int64),
            cat("step", torch.int64), cat("episode_return", torch.float32), cat("success", torch.float32))
    return buf


def rho(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho with average ranks for ties; NaN when either side is constant."""
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 3 or np.ptp(a[keep]) == 0 or np.ptp(b[keep]) == 0:
        return float("nan")
    return float(spearmanr(a[keep], b[keep]).statistic)


def label_rows(episodes: list[dict[str, Any]], discounts: list[float]) -> list[dict[str, Any]]:
    per_state = {name: np.concatenate([np.full(len(ep["rewards"]), ep[name], float) for ep in episodes])
                 for name in ("success", "start_tcp_push", "start_cube_goal")}
    rows = []
    for name in RETURN_LABELS:
        for discount in ([None] if name == "success" else discounts):
            buf = label_buffer(episodes, 1.0 if discount is None else discount)
            label = RETURN_LABELS[name].fn(buf).double().numpy()
            steps = buf.steps.numpy().astype(float)
            first = buf.steps.numpy() == 0
            rows.append({
                "label": name, "discount": discount,
                "success": rho(label, per_state["success"]),
                "start_tcp_push": rho(label, per_state["start_tcp_push"]),
                "start_cube_goal": rho(label, per_state["start_cube_goal"]),
                "step": rho(label, steps),
                "success_ep": rho(label[first], per_state["success"][first]),
            })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=60, help="episodes of at most 50 steps")
    parser.add_argument("--discounts", type=float, nargs="+", default=[0.8, 0.99, 1.0],
                        help="label discounts (return_discount); 0.8 = PushCube's PPO gamma")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--action-noise", type=float, default=0.4)
    parser.add_argument("--speed", type=float, nargs=2, default=[0.1, 0.55], help="per-episode speed range")
    parser.add_argument("--aim-noise", type=float, default=0.012, help="per-episode sideways aim offset (m)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)

    episodes, step_s = collect(args.episodes, args.seed, args.action_noise, tuple(args.speed), args.aim_noise)
    success = np.array([ep["success"] for ep in episodes])
    lengths = np.array([len(ep["rewards"]) for ep in episodes])
    returns = np.array([sum(ep["rewards"]) for ep in episodes])
    summary = {
        "episodes": len(episodes), "success_rate": float(success.mean()), "mean_length": float(lengths.mean()),
        "return_success": float(returns[success == 1].mean()) if (success == 1).any() else float("nan"),
        "return_failure": float(returns[success == 0].mean()) if (success == 0).any() else float("nan"),
        "ms_per_step": 1000 * step_s,
        "start_cube_goal_range": [min(ep["start_cube_goal"] for ep in episodes),
                                  max(ep["start_cube_goal"] for ep in episodes)],
    }
    print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in summary.items()})
    rows = label_rows(episodes, args.discounts)
    print_table(f"{ENV_ID}: Spearman rho of each label over all states ({len(episodes)} episodes, "
                f"success {summary['success_rate']:.2f}); success_ep: per episode, first state's label",
                ["label", "discount", "success", "start_tcp_push", "start_cube_goal", "step", "success_ep"],
                [[r["label"], "-" if r["discount"] is None else r["discount"], r["success"], r["start_tcp_push"],
                  r["start_cube_goal"], r["step"], r["success_ep"]] for r in rows])
    write_result(args.out, "label_quality", {"env_id": ENV_ID, **{k: v for k, v in vars(args).items() if k != "out"}},
                 {"summary": summary, "labels": rows,
                  "episodes": [{k: v for k, v in ep.items()} for ep in episodes]})


if __name__ == "__main__":
    main()
