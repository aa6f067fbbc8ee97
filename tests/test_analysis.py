"""Tests for the layer-wise grounding analysis (gaze_rl.analysis): a tiny hand-built policy whose
attention-on-target and masking effects are computed by hand, and (slow) `gaze-rl analyze` on a
real short checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from gaze_rl.analysis import layer_analysis, layer_names, random_cells, target_cells, zeroed
from gaze_rl.cli import main
from gaze_rl.nets.encoders import NatureCNN, PlainConv

from conftest import one_line_error

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


def tiny_policy(head_weights: list[float]) -> tuple[nn.Sequential, nn.Linear]:
    """conv1: 1x1 identity on a 1-channel 4x4 image; conv2: 2x2/2 average (a 2x2 grid); both ReLU.
    The action is a linear function of conv2's four cells."""
    backbone = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.ReLU(), nn.Conv2d(1, 1, 2, stride=2, bias=False), nn.ReLU())
    head = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        backbone[0].weight.fill_(1.0)
        backbone[2].weight.fill_(0.25)
        head.weight.copy_(torch.tensor([head_weights]))
    return backbone, head


def run(backbone, head, image, mask, **kwargs):
    act = lambda obs: head(backbone(obs["rgb"]).flatten(1))  # noqa: E731
    return layer_analysis(backbone, act, {"rgb": torch.as_tensor(image, dtype=torch.float32)[None, None]},
                          np.asarray(mask, dtype=bool)[None], **kwargs)


def test_hand_computed_attention_on_target_and_masking_effect():
    image = np.arange(1, 17, dtype=np.float64).reshape(4, 4)  # pixel values 1..16
    mask = np.zeros((4, 4), dtype=bool)
    mask[0, 0] = mask[0, 1] = mask[1, 0] = True  # 3 of the 4 pixels of the top-left block
    mask[3, 3] = True  # 1 of the 4 pixels of the bottom-right block
    w = [1.0, -2.0, 3.0, 0.5]  # head weights of conv2's cells (row-major: TL, TR, BL, BR)
    backbone, head = tiny_policy(w)
    conv1, conv2 = run(backbone, head, image, mask, cover_threshold=0.5)

    # conv1 = the image: energy on target / total energy; chance = 4 / 16 pixels
    assert conv1.attention_on_target == pytest.approx((1 + 2 + 5 + 16) / image.sum())
    assert conv1.chance == pytest.approx(4 / 16)
    assert conv1.lift == pytest.approx(conv1.attention_on_target / 0.25)
    # zeroing conv1 at the 4 target pixels lowers conv2's TL cell by (1+2+5)/4 and BR by 16/4
    assert conv1.region_cells == 4
    assert conv1.sensitivity_target == pytest.approx(abs(w[0] * 8 / 4 + w[3] * 16 / 4))

    # conv2 cells = block means: TL (1+2+5+6)/4, TR (3+4+7+8)/4, BL (9+10+13+14)/4, BR (11+12+15+16)/4
    blocks = np.array([14, 22, 46, 54]) / 4
    coverage = np.array([3 / 4, 0, 0, 1 / 4])
    assert conv2.attention_on_target == pytest.approx((blocks / blocks.sum() * coverage).sum())
    # only TL is covered >= 0.5: zeroing it changes the action by |w_TL * TL|
    assert conv2.region_cells == 1
    assert conv2.sensitivity_target == pytest.approx(abs(w[0] * blocks[0]))
    assert [conv1.shape, conv2.shape] == [(1, 4, 4), (1, 2, 2)]
    assert conv1.frames == conv1.frames_with_target == 1


def test_hand_computed_control_and_ratio():
    """A flat image and equal head weights: any n zeroed cells change the action by the same
    amount, so the random control is known exactly."""
    backbone, head = tiny_policy([1.0, 1.0, 1.0, 1.0])
    mask = np.zeros((4, 4), dtype=bool)
    mask[:2, :] = True  # top half: 8 pixels, 2 conv2 cells
    conv1, conv2 = run(backbone, head, np.ones((4, 4)), mask, control_draws=3)
    assert conv1.sensitivity_target == pytest.approx(8 * 0.25) == pytest.approx(conv1.sensitivity_control)
    assert conv2.sensitivity_target == pytest.approx(2.0) == pytest.approx(conv2.sensitivity_control)
    assert conv1.sensitivity_ratio == pytest.approx(1.0)
    assert conv1.attention_on_target == pytest.approx(0.5) and conv1.lift == pytest.approx(1.0)


@pytest.mark.parametrize("cell", [0, 3])  # the action reads only the target's cell (TL) / only another cell (BR)
def test_zeroing_the_cell_the_action_reads_beats_random_cells(cell):
    """A policy whose action is 2 x one conv2 cell, and a target filling the top-left 2x2 block
    (conv2's TL cell) in every frame. Zeroing the target (4 pixels at conv1, one cell at conv2)
    wipes the read cell out exactly when it is TL; random regions of the same size do so only
    part of the time (a quarter, in expectation), so the target's sensitivity is the whole
    |action| and above the control, or exactly 0 when the action reads another cell."""
    rng = np.random.default_rng(1)
    images = rng.uniform(0.5, 1.5, (16, 4, 4))  # positive: the ReLUs pass everything
    mask = np.zeros((16, 4, 4), dtype=bool)
    mask[:, :2, :2] = True
    weights = [0.0] * 4
    weights[cell] = 2.0
    backbone, head = tiny_policy(weights)
    act = lambda obs: head(backbone(obs["rgb"]).flatten(1))  # noqa: E731
    conv1, conv2 = layer_analysis(backbone, act, {"rgb": torch.as_tensor(images, dtype=torch.float32)[:, None]}, mask)
    read = 2.0 * images[:, 2 * (cell // 2):2 * (cell // 2) + 2, 2 * (cell % 2):2 * (cell % 2) + 2].mean(axis=(1, 2))
    for layer, region in ((conv1, 4), (conv2, 1)):
        assert layer.region_cells == region and layer.frames_with_target == 16
        assert 0.0 < layer.sensitivity_control < read.mean()  # some random regions hit the read cell, not all
        if cell == 0:
            assert layer.sensitivity_target == pytest.approx(read.mean(), rel=1e-6)
            assert layer.sensitivity_ratio > 2.0  # expected 4: a random region of this size hits a quarter of the cell
        else:
            assert layer.sensitivity_target == 0.0 and layer.sensitivity_ratio == 0.0


def test_small_target_keeps_its_best_cell_and_empty_frames_are_left_out():
    mask = np.zeros((2, 4, 4), dtype=bool)
    mask[0, 3, 3] = True  # covers 1/4 of one conv2 cell: below the threshold, kept as best cell
    cells = target_cells(mask, 2, 2, 0.5)
    assert cells[0].tolist() == [[False, False], [False, True]]
    assert not cells[1].any()
    backbone, head = tiny_policy([1.0, 1.0, 1.0, 1.0])
    act = lambda obs: head(backbone(obs["rgb"]).flatten(1))  # noqa: E731
    results = layer_analysis(backbone, act, {"rgb": torch.ones(2, 1, 4, 4)}, mask)
    assert results[1].frames == 2 and results[1].frames_with_target == 1
    assert results[1].sensitivity_target == pytest.approx(1.0)


def test_random_cells_and_zeroed_hook():
    rng = np.random.default_rng(0)
    cells = random_cells(np.array([0, 3, 16]), 4, 4, rng)
    assert cells.reshape(3, -1).sum(axis=1).tolist() == [0, 3, 16]
    relu = nn.ReLU()
    x = torch.ones(1, 2, 2, 2)
    region = torch.tensor([[[True, False], [False, False]]])
    with zeroed(relu, region):
        out = relu(x)
    assert out[0, :, 0, 0].tolist() == [0.0, 0.0] and float(out.sum()) == 6.0
    assert torch.equal(relu(x), x)  # the hook is gone


def test_analysis_validates_its_options():
    backbone, head = tiny_policy([1.0, 1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="cover_threshold"):
        run(backbone, head, np.ones((4, 4)), np.ones((4, 4)), cover_threshold=0.0)
    with pytest.raises(ValueError, match="control_draws"):
        run(backbone, head, np.ones((4, 4)), np.ones((4, 4)), control_draws=0)


def test_layer_names():
    assert layer_names(NatureCNN(3)) == ["conv1 (8x8/4, 32)", "conv2 (4x4/2, 64)", "conv3 (3x3/1, 64)"]
    assert layer_names(PlainConv(3, 64))[-1] == "conv5 (1x1/1, 64)"


@pytest.mark.parametrize("argv, message", [
    (["--checkpoint", "nope.zip"], "does not exist"),
    (["--checkpoint", "nope.zip", "--episodes", "0"], "episodes must be >= 1"),
    (["--checkpoint", "nope.zip", "--compare", "missing.json"], "--compare missing.json does not exist"),
])
def test_analyze_bad_input_gives_one_clear_line(capsys, argv, message):
    assert message in one_line_error(capsys, ["analyze", *argv])


@pytest.mark.slow
def test_analyze_a_real_pruned_multi_level_checkpoint(tmp_path, capsys):
    run_dir = tmp_path / "run"
    main(["train", "--env-id", "PushT-v1", "--method", "gaze", "--image-size", "64", "--total-timesteps", "200",
          "--num-envs", "1", "--prune-top-k", "4", "--multi-level", "--checkpoint-every", "0",
          "--gaze-image-every", "0", "--no-progress-bar", "--run-dir", str(run_dir)])
    checkpoint = run_dir / "checkpoints" / "final.zip"
    main(["analyze", "--checkpoint", str(checkpoint), "--episodes", "1", "--every", "10", "--control-draws", "2"])
    result = json.loads((run_dir / "analysis" / "final__seed10000.json").read_text())
    assert result["label"] == "gaze K=4 multi-level" and result["prune_top_k"] == 4 and result["multi_level"]
    assert result["image_head_params"] == 4 * (32 + 64 + 64 + 2) * 256 + 256
    assert [layer["name"].split()[0] for layer in result["layers"]] == ["conv1", "conv2", "conv3"]
    # Every layer and the policy's own attention are measured on the same 10 frames against the
    # same target pixels (the Tee and its goal, in view in every PushT frame): one chance level,
    # each lift is its attention-on-target over it, each ratio is target over control.
    chance = result["layers"][0]["chance"]
    assert 0.0 < chance < 0.5
    for layer in result["layers"]:
        assert layer["frames"] == layer["frames_with_target"] == 10 and layer["chance"] == chance
        assert layer["lift"] == pytest.approx(layer["attention_on_target"] / chance, rel=1e-9)
        assert layer["sensitivity_ratio"] == pytest.approx(layer["sensitivity_target"] / layer["sensitivity_control"])
    assert result["policy_attention_lift"] == pytest.approx(result["policy_attention_on_target"] / chance, rel=1e-9)
    assert (run_dir / "analysis" / "final__seed10000.png").stat().st_size > 0
    out = capsys.readouterr().out
    assert "conv3 (3x3/1, 64)" in out and "sensitivity target" in out

    # a second policy drawn beside the first; the first result is never overwritten
    main(["analyze", "--checkpoint", str(checkpoint), "--episodes", "1", "--every", "50", "--seed", "1",
          "--label", "again", "--compare", str(run_dir / "analysis" / "final__seed10000.json")])
    assert (run_dir / "analysis" / "final__seed1.png").is_file()
    with pytest.raises(SystemExit):
        main(["analyze", "--checkpoint", str(checkpoint), "--episodes", "1"])
    assert "already exists" in capsys.readouterr().err
