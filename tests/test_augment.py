"""Random-shift augmentation (DrQ / RAD): a true translation, per image, only in training mode."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gaze_rl.nets.augment import RandomShift, make_augment


def test_shift_is_a_crop_of_the_padded_image_at_some_offset_per_image():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 20, 24), dtype=torch.uint8)
    shifted = RandomShift(4).train()(images)
    assert shifted.shape == images.shape and shifted.dtype == images.dtype
    padded = F.pad(images.float(), (4,) * 4, mode="replicate")
    offsets = []
    for i in range(len(images)):
        matches = [(dy, dx) for dy in range(9) for dx in range(9)
                   if torch.equal(padded[i, :, dy:dy + 20, dx:dx + 24], shifted[i].float())]
        assert matches, f"image {i} is not a shifted copy"
        offsets.append(matches[0])
    assert len(set(offsets)) > 4  # drawn per image, not once per batch


def test_shift_is_the_identity_outside_training():
    images = torch.rand(4, 3, 16, 16)
    assert torch.equal(RandomShift(4).eval()(images), images)


def test_make_augment_names_the_choices():
    assert isinstance(make_augment("none"), torch.nn.Identity)
    with pytest.raises(ValueError, match="valid choices: none, shift"):
        make_augment("crop")
    with pytest.raises(ValueError, match="pad must be >= 1"):
        RandomShift(0)


def test_extractor_shifts_only_in_training_mode():
    from gaze_rl.nets.extractor import GazeExtractor

    from net_inputs import batch, dict_space

    space = dict_space(64)
    torch.manual_seed(0)
    shifted = GazeExtractor(space, backbone="nature", attention="gaussian", augment="shift")
    torch.manual_seed(0)
    plain = GazeExtractor(space, backbone="nature", attention="gaussian")
    obs = batch(space, n=8)
    assert shifted.state_dict().keys() == plain.state_dict().keys()  # no parameters of its own
    shifted.eval(), plain.eval()
    assert torch.equal(shifted(obs), plain(obs))  # acting: the true frame
    shifted.train()
    first, second = shifted(obs), shifted(obs)
    assert not torch.equal(first, second)  # training: a new shift per forward and image


def test_bench_arm_with_an_augment_trains_the_method_with_it():
    from gaze_rl.bench.grid import RunSpec, train_args
    from gaze_rl.configuration.commands import BenchConfig
    from gaze_rl.configuration.methods import parse_arm

    args = train_args(RunSpec("PushCube-v1", "ppo", "gaze+shift", 0), BenchConfig())
    assert args[args.index("--method") + 1] == "gaze" and args[args.index("--augment") + 1] == "shift"
    assert "--gaze.residual" not in args
    args = train_args(RunSpec("PushCube-v1", "ppo", "baseline", 0), BenchConfig())
    assert args[args.index("--augment") + 1] == "none"
    args = train_args(RunSpec("PushCube-v1", "ppo", "gaze-oracle+residual", 0), BenchConfig())
    assert args[args.index("--method") + 1] == "gaze-oracle" and "--gaze.residual" in args
    with pytest.raises(ValueError, match="unknown modifier"):
        parse_arm("gaze+crop")
    with pytest.raises(ValueError, match="no attention map"):
        parse_arm("baseline+residual")
