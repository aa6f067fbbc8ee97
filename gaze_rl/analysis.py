"""DeepVision-VLA's layer-wise grounding analysis, for gaze_rl's CNN policies (run on a checkpoint
by `gaze-rl analyze`: gaze_rl.commands.analyze).

DeepVision-VLA finds that a policy's sensitivity to task-relevant visual tokens
fades in deeper layers. This module measures the same for a trained checkpoint, per conv layer
(gaze_rl.nets.levels: a conv and the activation after it), on the observations of a few
episodes of the deterministic policy, with the task-relevant actors found in ManiSkill3's
segmentation (gaze_rl.segmentation.targets: `PushT-v1`: Tee, goal_Tee; `PokeCube-v1`: cube, peg,
goal_region):

(i) attention-on-target: the layer's activation energy `sum_c |a_c|`, normalised to sum 1
    over its cells (`energy_share`) and spread over the image (each cell uniformly over the pixels it covers, the
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    names: list[str] = []
    last_conv: nn.Conv2d | None = None
    indices = set(layer_indices(backbone))
    for i, module in enumerate(backbone):
        if isinstance(module, nn.Conv2d):
            last_conv = module
        if i in indices:
            detail = "" if last_conv is None else (
                f" ({last_conv.kernel_size[0]}x{last_conv.kernel_size[1]}/{last_conv.stride[0]}, {last_conv.out_channels})")
            names.append(f"conv{len(names) + 1}{detail}")
    return names


def energy_share(activations: Tensor) -> Tensor:
    """Each cell's share of a layer's activation energy (linear, no temperature), (B, C, h, w) ->
    (B, h, w), summing to 1; a frame with no energy at all gets the uniform distribution. Not
    gaze_rl.segmentation.on_target.energy_softmax, the baseline policy's attention."""
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


def obs_rows(obs: Observations, start: int, stop: int) -> Observations:
    return {k: v[start:stop] for k, v in obs.items()}


def action_change(act: Callable[[Observations], Tensor], obs: Observations, reference: Tensor, module: nn.Module,
                  cells: np.ndarray) -> np.ndarray:
    """Per frame, the L2 change of `act`'s actions from `reference` when `module`'s output is zeroed in `cells`."""
    with zeroed(module, torch.as_tensor(cells, device=reference.device)):
        return (act(obs) - reference).flatten(1).norm(dim=1).cpu().double().numpy()


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
        chunk = obs_rows(obs, start, stop)
        with captured(modules) as acts:
            reference = act(chunk)
        if not shapes:
            shapes = [tuple(a.shape[1:]) for a in acts]  # type: ignore[union-attr]  # filled by the forward
        for j, (module, activations) in enumerate(zip(modules, acts)):
            assert activations is not None  # every hooked layer ran in act()
            _, h, w = activations.shape[1:]
            aot[j][start:stop] = attention_on_target(energy_share(activations), coverage_grid(masks[start:stop], h, w))
            cells = target_cells(masks[start:stop], h, w, cover_threshold)
            region[j][start:stop] = cells.reshape(stop - start, -1).sum(axis=1)
            target[j][start:stop] = action_change(act, chunk, reference, module, cells)
            control[j][start:stop] = np.mean(
                [action_change(act, chunk, reference, module, random_cells(region[j][start:stop], h, w, rng))
                 for _ in range(control_draws)], axis=0)
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
