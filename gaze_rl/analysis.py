"""`gaze-rl analyze`: DeepVision-VLA's layer-wise grounding analysis, for gaze_rl's CNN policies.

DeepVision-VLA (seeds/003) finds that a policy's sensitivity to task-relevant visual tokens
fades in deeper layers. This module measures the same for a trained checkpoint, per conv layer
(gaze_rl.nets.levels: a conv and the activation after it), on the observations of a few
episodes of the deterministic policy, with the task-relevant actors found in ManiSkill3's
segmentation (gaze_rl.imitation: `PushT-v1`: Tee, goal_Tee; `PokeCube-v1`: cube, peg,
goal_region):

(i) attention-on-target: the layer's activation energy `sum_c |a_c|`, normalised to sum 1
    over its cells and spread over the image (each cell uniformly over the pixels it covers, the
    project's grid convention), put on target pixels:
    `aot = sum_cells p_cell * coverage_cell` (gaze_rl.segmentation.on_target.attention_on_target).
    `chance` is the targets' share of the image (what uniform energy scores); lift = aot / chance.
(ii) sensitivity: the mean L2 change of the policy's deterministic action when the layer's
    activations in the task-relevant cells are zeroed (a forward hook), against the same for
    as many cells drawn uniformly at random (the control). A cell is task-relevant when targets
    cover at least `cover_threshold` of it; when none does, the best-covered cell is (frames
    without any target pixel are left out of the sensitivity).

Zeroing happens inside the policy's forward pass, so everything after the layer responds to it
(deeper layers, the gaze head, pruning, the action head). The result is a JSON and a PNG with
both quantities against depth; `compare` draws other analyses (e.g. the baseline's) beside it.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from gaze_rl.nets.levels import energy, layer_indices
from gaze_rl.segmentation.on_target import attention_on_target
from gaze_rl.segmentation.targets import coverage_grid

Observations = dict[str, Tensor]


@dataclass
class LayerResult:
    """Per-layer means over the analysed frames (sensitivities: over frames with targets)."""

    name: str
    shape: tuple[int, int, int]
    attention_on_target: float
    chance: float
    lift: float
    sensitivity_target: float
    sensitivity_target_sem: float
    sensitivity_control: float
    sensitivity_control_sem: float
    sensitivity_ratio: float
    region_cells: float
    frames: int
    frames_with_target: int


def layer_names(backbone: nn.Sequential) -> list[str]:
    """`conv<i> (<kernel>/<stride>, <channels>)` for each conv layer of a backbone."""
    names, last_conv = [], None
    indices = set(layer_indices(backbone))
    for i, module in enumerate(backbone):
        if isinstance(module, nn.Conv2d):
            last_conv = module
        if i in indices:
            detail = "" if last_conv is None else (
                f" ({last_conv.kernel_size[0]}x{last_conv.kernel_size[1]}/{last_conv.stride[0]}, {last_conv.out_channels})")
            names.append(f"conv{len(names) + 1}{detail}")
    return names


def energy_distribution(activations: Tensor) -> Tensor:
    """Activation energy normalised to sum 1 over cells, (B, C, h, w) -> (B, h, w); a frame
    with no energy at all gets the uniform distribution."""
    e = energy(activations).flatten(1).double()
    total = e.sum(dim=1, keepdim=True)
    uniform = torch.full_like(e, 1.0 / e.shape[1])
    return torch.where(total > 0, e / total.clamp_min(1e-300), uniform).view(activations.shape[0], *activations.shape[2:])


def target_cells(masks: np.ndarray, height: int, width: int, cover_threshold: float) -> np.ndarray:
    """(B, height, width) bool: cells covered at least `cover_threshold` by the (B, H, W) target
    masks; a frame where no cell reaches it keeps its best-covered cell (if it has target pixels)."""
    coverage = coverage_grid(masks, height, width)
    cells = coverage >= cover_threshold
    flat = coverage.reshape(len(coverage), -1)
    for i in np.flatnonzero(~cells.reshape(len(cells), -1).any(axis=1) & (flat.max(axis=1) > 0)):
        cells[i].flat[int(flat[i].argmax())] = True
    return cells


def random_cells(counts: np.ndarray, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """(B, height, width) bool with `counts[b]` cells drawn uniformly without replacement."""
    out = np.zeros((len(counts), height * width), dtype=bool)
    for i, n in enumerate(counts):
        out[i, rng.choice(height * width, size=int(n), replace=False)] = True
    return out.reshape(len(counts), height, width)


@contextlib.contextmanager
def zeroed(module: nn.Module, cells: Tensor) -> Iterator[None]:
    """While active, `module`'s (B, C, h, w) output is zero in the (B, h, w) `cells`."""
    keep = (~cells)[:, None]
    handle = module.register_forward_hook(lambda _m, _inp, out: out * keep.to(out.dtype))
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def captured(modules: list[nn.Module]) -> Iterator[list[Tensor | None]]:
    """While active, the list holds each module's latest output (detached)."""
    outputs: list[Tensor | None] = [None] * len(modules)

    def hook(i: int) -> Callable:
        def record(_m, _inp, out):
            outputs[i] = out.detach()
        return record

    handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(modules)]
    try:
        yield outputs
    finally:
        for h in handles:
            h.remove()


def _chunk(obs: Observations, start: int, stop: int) -> Observations:
    return {k: v[start:stop] for k, v in obs.items()}


def _sem(values: np.ndarray) -> float:
    return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0


@torch.no_grad()
def layer_analysis(backbone: nn.Sequential, act: Callable[[Observations], Tensor], obs: Observations,
                   masks: np.ndarray, cover_threshold: float = 0.5, control_draws: int = 4, seed: int = 0,
                   batch_size: int = 256) -> list[LayerResult]:
    """The per-layer analysis of a policy on given observations (no env involved).

    :param backbone: the policy's conv backbone (its layers are found with levels.layer_indices).
    :param act: observations -> deterministic actions (B, A); must run `backbone` (hooks are used).
    :param obs: observations as `act` takes them, each with N frames on the first axis.
    :param masks: (N, H, W) bool task-relevant pixels of each frame.
    """
    if not 0.0 < cover_threshold <= 1.0:
        raise ValueError(f"cover_threshold must be in (0, 1] (got {cover_threshold})")
    if control_draws < 1:
        raise ValueError(f"control_draws must be >= 1 (got {control_draws})")
    modules = [backbone[i] for i in layer_indices(backbone)]
    names = layer_names(backbone)
    masks = np.asarray(masks, dtype=bool)
    n = len(masks)
    rng = np.random.default_rng(seed)
    aot = [np.zeros(n) for _ in modules]
    target = [np.zeros(n) for _ in modules]
    control = [np.zeros(n) for _ in modules]
    region = [np.zeros(n) for _ in modules]
    shapes: list[tuple[int, int, int]] = []
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        chunk = _chunk(obs, start, stop)
        with captured(modules) as acts:
            reference = act(chunk)
        if not shapes:
            shapes = [tuple(a.shape[1:]) for a in acts]  # type: ignore[union-attr, misc]
        for j, (module, activations) in enumerate(zip(modules, acts)):
            _, h, w = activations.shape[1:]
            aot[j][start:stop] = attention_on_target(energy_distribution(activations), coverage_grid(masks[start:stop], h, w))
            cells = target_cells(masks[start:stop], h, w, cover_threshold)
            region[j][start:stop] = cells.reshape(stop - start, -1).sum(axis=1)

            def change(selected: np.ndarray) -> np.ndarray:
                with zeroed(module, torch.as_tensor(selected, device=activations.device)):
                    return (act(chunk) - reference).flatten(1).norm(dim=1).cpu().double().numpy()

            target[j][start:stop] = change(cells)
            control[j][start:stop] = np.mean(
                [change(random_cells(region[j][start:stop], h, w, rng)) for _ in range(control_draws)], axis=0)
    chance = float(masks.reshape(n, -1).mean(axis=1).mean()) if n else 0.0
    results = []
    for j, name in enumerate(names):
        has_target = region[j] > 0
        t, c = target[j][has_target], control[j][has_target]
        mean_aot = float(aot[j].mean())
        results.append(LayerResult(
            name=name, shape=shapes[j], attention_on_target=mean_aot, chance=chance,
            lift=mean_aot / chance if chance > 0 else float("nan"),
            sensitivity_target=float(t.mean()) if len(t) else float("nan"), sensitivity_target_sem=_sem(t),
            sensitivity_control=float(c.mean()) if len(c) else float("nan"), sensitivity_control_sem=_sem(c),
            sensitivity_ratio=float(t.mean() / c.mean()) if len(t) and c.mean() > 0 else float("nan"),
            region_cells=float(region[j][has_target].mean()) if has_target.any() else 0.0,
            frames=n, frames_with_target=int(has_target.sum()),
        ))
    return results


def default_label(train: dict[str, Any]) -> str:
    """`<method>`, plus ` K=<k>` when pruned and ` multi-level` when fused."""
    label = train["method"]
    if train.get("prune_top_k") is not None:
        label += f" K={train['prune_top_k']}"
    if train.get("multi_level"):
        label += " multi-level"
    return label


def plot(analyses: list[dict[str, Any]], path: Path) -> None:
    """Attention-on-target (lift) and sensitivity (target solid, control dashed) against depth,
    one colour per analysed policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_aot, ax_sens) = plt.subplots(1, 2, figsize=(11, 4))
    for i, analysis in enumerate(analyses):
        layers = analysis["layers"]
        depth = np.arange(1, len(layers) + 1)
        colour = f"C{i}"
        ax_aot.plot(depth, [layer["lift"] for layer in layers], "o-", color=colour, label=analysis["label"])
        if analysis.get("policy_attention_lift") is not None:
            ax_aot.axhline(analysis["policy_attention_lift"], color=colour, ls=":", lw=1)
        for key, style in (("sensitivity_target", "o-"), ("sensitivity_control", "s--")):
            ax_sens.errorbar(depth, [layer[key] for layer in layers], yerr=[layer[key + "_sem"] for layer in layers],
                             fmt=style, color=colour, capsize=3)
    ax_aot.axhline(1.0, color="grey", lw=1)
    names = [layer["name"].split(" ")[0] for layer in analyses[0]["layers"]]
    for ax in (ax_aot, ax_sens):
        ax.set_xticks(np.arange(1, len(names) + 1), names)
        ax.set_xlabel("conv layer (shallow -> deep)")
    ax_aot.legend(fontsize=7)
    ax_aot.set_ylabel("attention-on-target lift (1 = uniform)")
    ax_aot.set_title("activation energy on task-relevant pixels\n(dotted: the policy's attention map)", fontsize=9)
    ax_sens.set_ylabel("mean L2 change of the action (+- s.e.m.)")
    ax_sens.set_title("action change when a region's activations are zeroed\n"
                      "(solid: task-relevant region, dashed: random region of equal area)", fontsize=9)
    fig.suptitle(f"{analyses[0]['env_id']}: layer-wise grounding", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def analyze(cfg: Any) -> dict[str, Any]:
    """Runs `gaze-rl analyze` (an AnalyzeConfig): episodes, per-layer analysis, JSON and PNG."""
    from gaze_rl.checkpoints import load_model
    from gaze_rl.envs.factory import EnvSpec
    from gaze_rl.evaluate import load_run_config
    from gaze_rl.segmentation.on_target import policy_extractor, segmented_eval_env
    from gaze_rl.runlog import write_json
    from gaze_rl.train import ALGO_CLASSES, resolve_device

    for name, value, low in (("episodes", cfg.episodes, 1), ("every", cfg.every, 1), ("control_draws", cfg.control_draws, 1)):
        if value < low:
            raise ValueError(f"{name} must be >= {low} (got {value})")
    if not 0.0 < cfg.cover_threshold <= 1.0:
        raise ValueError(f"cover_threshold must be in (0, 1] (got {cfg.cover_threshold})")
    compare = []
    for path in cfg.compare:
        if not Path(path).is_file():
            raise FileNotFoundError(f"--compare {path} does not exist; pass JSONs written by gaze-rl analyze")
        compare.append(json.loads(Path(path).read_text()))
    run = load_run_config(cfg.checkpoint)
    spec = EnvSpec(**{**run["env"], "num_envs": 1, "ignore_terminations": True})
    out_dir = cfg.out_dir or cfg.checkpoint.resolve().parent.parent / "analysis"
    stem = f"{cfg.checkpoint.stem}__seed{cfg.seed}"
    json_path, png_path = out_dir / f"{stem}.json", out_dir / f"{stem}.png"
    for path in (json_path, png_path):
        if path.exists():
            raise FileExistsError(f"{path} already exists; pass another --seed or --out-dir")
    model = load_model(ALGO_CLASSES[run["train"]["algo"]], cfg.checkpoint, device=resolve_device(cfg.device))
    extractor = policy_extractor(model)
    if not hasattr(extractor, "backbone"):
        raise ValueError(f"gaze-rl analyze needs gaze_rl's GazeExtractor (got {type(extractor).__name__})")
    env, meter = segmented_eval_env(model, spec, cfg.target_actors, seed=cfg.seed)
    frames: list[dict[str, np.ndarray]] = []
    masks: list[np.ndarray] = []
    episodes: list[dict[str, Any]] = []
    try:
        obs, step = env.reset(), 0
        while len(episodes) < cfg.episodes:
            if step % cfg.every == 0:
                frame = env.get_attr("frame")[0]
                masks.append(meter.targets.frame_mask(frame))
                meter.observe(obs, [frame])
                frames.append({k: v.copy() for k, v in obs.items()})
            action, _ = model.predict(obs, deterministic=True)
            obs, _, dones, infos = env.step(action)
            step += 1
            if dones[0]:
                info = infos[0]
                episodes.append({"return": float(info["episode"]["r"]), "success_once": bool(info["success_once"]),
                                 "success_at_end": bool(info["success_at_end"])})
    finally:
        env.close()
    stacked = {k: np.concatenate([f[k] for f in frames]) for k in frames[0]}
    obs_tensor, _ = model.policy.obs_to_tensor(stacked)
    model.policy.set_training_mode(False)
    act = lambda o: model.policy._predict(o, deterministic=True)  # noqa: E731  (the mean action, unclipped)
    layers = layer_analysis(extractor.backbone, act, obs_tensor, np.stack(masks), cfg.cover_threshold,
                            cfg.control_draws, seed=cfg.seed)
    with torch.no_grad():  # the scale the sensitivities compare to
        norms = [act(_chunk(obs_tensor, i, i + 256)).flatten(1).norm(dim=1) for i in range(0, len(masks), 256)]
    action_norm = float(torch.cat(norms).mean())
    pruned = run["train"].get("prune_top_k") is not None
    attention = meter.summary()
    result = {
        "checkpoint": str(cfg.checkpoint), "label": cfg.label or default_label(run["train"]),
        "env_id": spec.env_id, "algo": run["train"]["algo"], "method": run["train"]["method"],
        "image_size": spec.image_size, "prune_top_k": run["train"].get("prune_top_k"),
        "prune_source": extractor.prune_source if pruned else None, "multi_level": bool(run["train"].get("multi_level")),
        "train_steps": run["train"]["total_timesteps"], "seed": cfg.seed, "episodes": cfg.episodes,
        "every": cfg.every, "cover_threshold": cfg.cover_threshold, "control_draws": cfg.control_draws,
        "success_once": float(np.mean([e["success_once"] for e in episodes])),
        "success_at_end": float(np.mean([e["success_at_end"] for e in episodes])),
        "return_mean": float(np.mean([e["return"] for e in episodes])),
        "policy_attention_on_target": attention.get("attention_on_target"),
        "policy_attention_lift": attention.get("attention_on_target_lift"),
        "policy_attention_mode": attention.get("attention_mode"),
        "image_head_params": sum(p.numel() for p in extractor.image_fc.parameters()),
        "policy_params": sum(p.numel() for p in model.policy.parameters()),
        "action_norm_mean": action_norm,
        "layers": [asdict(layer) for layer in layers],
        "per_episode": episodes,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(json_path, result)
    plot([result, *compare], png_path)
    print(f"{spec.env_id} {result['label']}: {len(masks)} frames of {cfg.episodes} episodes, success_once "
          f"{result['success_once']:.2f}, return {result['return_mean']:.2f}, mean |action| {action_norm:.3f}")
    for layer in layers:
        print(f"  {layer.name:<22} attention-on-target {layer.attention_on_target:.3f} (lift {layer.lift:.2f})  "
              f"sensitivity target {layer.sensitivity_target:.4f} vs random {layer.sensitivity_control:.4f}")
    print(f"saved {json_path}\nplot  {png_path}")
    return result
