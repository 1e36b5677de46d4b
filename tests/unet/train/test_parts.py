import itertools

import numpy as np
import pytest
import torch

from pipeline.errors import ConfigError
from unet.train import (
    Augment,
    Confusion,
    TrainSettings,
    augment_patch,
    cpu_supports_bf16,
    dice_loss,
    focal_loss,
    get_loss,
    learning_rate,
    load_optimizer_state,
    parse_train_settings,
    resolve_precision,
    save_optimizer_state,
    xent_loss,
)


def logits_for(labels, confidence=8.0):
    return (labels.float() * 2 - 1).unsqueeze(1) * confidence


def test_losses_reward_correct_logits_and_skip_ignored_pixels():
    labels = torch.zeros(2, 8, 8, dtype=torch.uint8)
    labels[:, 2:5, 2:5] = 1
    good, bad = logits_for(labels), -logits_for(labels)
    for name in ("bce+dice", "dice", "focal", "bce"):
        loss = get_loss(name)
        assert float(loss(good, labels)) < 0.01 < float(loss(bad, labels)), name
    ignored = labels.clone()
    ignored[:, :, :4] = 255
    worse = good.clone()
    worse[:, :, :, :4] = -worse[:, :, :, :4]  # wrong only where ignored
    for fn in (xent_loss, dice_loss, focal_loss):
        assert float(fn(worse, ignored)) == pytest.approx(float(fn(good, ignored)), abs=1e-6)
    empty = torch.zeros(1, 8, 8, dtype=torch.uint8)
    assert float(dice_loss(torch.full((1, 1, 8, 8), -10.0), empty)) < 0.01


def test_multiclass_losses():
    labels = torch.randint(0, 3, (2, 6, 6), dtype=torch.uint8)
    good = torch.nn.functional.one_hot(labels.long(), 3).permute(0, 3, 1, 2).float() * 10
    for name in ("ce", "ce+dice", "dice", "focal"):
        assert float(get_loss(name)(good, labels)) < 0.02, name
    with pytest.raises(ValueError, match="unknown loss"):
        get_loss("l2")


def test_geometric_augmentations_move_labels_with_pixels():
    rng = np.random.default_rng(0)
    label = (rng.random((16, 16)) > 0.5).astype(np.uint8)
    image = np.stack([label * 5.0, label * -3.0]).astype(np.float32)
    seen = set()
    for seed in range(20):
        out_image, out_label = augment_patch(
            image, label, Augment(noise=0, brightness=0, contrast=0), np.random.default_rng(seed)
        )
        np.testing.assert_array_equal(out_image[0], out_label * 5.0)
        np.testing.assert_array_equal(out_image[1], out_label * -3.0)
        seen.add(out_label.tobytes())
    assert len(seen) >= 6  # flips x rotations produce up to 8 distinct layouts
    noisy, same = augment_patch(image, label, Augment(False, False, 0.5, 0.5, 0.1), rng)
    np.testing.assert_array_equal(same, label)
    assert not np.allclose(noisy, image) and noisy.dtype == np.float32


def test_schedules():
    assert learning_rate(0, 100, 1.0, "onecycle") == pytest.approx(0.04)
    assert learning_rate(10, 100, 1.0, "onecycle") == pytest.approx(1.0)
    assert learning_rate(99, 100, 1.0, "onecycle") == pytest.approx(1e-3)
    assert learning_rate(0, 100, 1.0, "cosine") == pytest.approx(1.0)
    values = [learning_rate(s, 100, 1.0, "cosine") for s in range(100)]
    assert all(a >= b for a, b in itertools.pairwise(values))


def test_confusion_iou():
    confusion = Confusion(2)
    confusion.update(torch.tensor([[1, 1, 0, 0]]), torch.tensor([[1, 0, 1, 255]]))
    assert confusion.iou() == [pytest.approx(1 / 3)]
    assert confusion.dice() == [pytest.approx(0.5)]


def test_optimizer_state_round_trip(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    save_optimizer_state(optimizer, tmp_path / "s.safetensors")
    other = torch.optim.AdamW(model.parameters(), lr=0.5)
    load_optimizer_state(other, tmp_path / "s.safetensors")
    a, b = optimizer.state_dict(), other.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for index, state in a["state"].items():
        for key, value in state.items():
            torch.testing.assert_close(value, b["state"][index][key])


def test_settings_are_checked():
    assert parse_train_settings({"epochs": "3", "augment": False}).augment.flips is False
    with pytest.raises(ConfigError, match="unknown train keys"):
        parse_train_settings({"epoch": 3})
    with pytest.raises(ConfigError, match=r"train\.loss"):
        TrainSettings(loss="l1")
    with pytest.raises(ConfigError, match="augment"):
        parse_train_settings({"augment": {"flip": True}})
    assert TrainSettings(epochs=2, steps_per_epoch=3).total_steps == 6


def test_precision_auto_follows_the_cpu(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor : 0\nflags : fpu avx2 amx_bf16 amx_tile\n")
    assert cpu_supports_bf16(info)
    info.write_text("flags : fpu avx2\n")
    assert not cpu_supports_bf16(info)
    assert not cpu_supports_bf16(tmp_path / "missing")
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    assert resolve_precision("auto", torch.device("cpu")) in ("fp32", "bf16")


def test_class_weights_scale_the_cross_entropy():
    labels = torch.zeros(1, 6, 6, dtype=torch.uint8)
    labels[0, 2:4, 2:4] = 2  # four pixels of a thin class
    logits = torch.zeros(1, 3, 6, 6)  # uniform: every pixel costs log(3)
    plain = float(xent_loss(logits, labels))
    weighted = float(xent_loss(logits, labels, [1.0, 1.0, 5.0]))
    assert plain == pytest.approx(np.log(3), rel=1e-6)
    assert weighted == pytest.approx(np.log(3), rel=1e-6)  # a weighted mean of equal costs
    wrong = logits.clone()
    wrong[0, 0, 2:4, 2:4] = 5.0  # the thin class is mistaken for background
    assert float(xent_loss(wrong, labels, [1.0, 1.0, 5.0])) > float(xent_loss(wrong, labels))
    assert float(get_loss("ce+dice", [1.0, 1.0, 5.0])(wrong, labels)) > 0
    with pytest.raises(ValueError, match="one weight per output channel"):
        xent_loss(logits, labels, [1.0, 2.0])
    with pytest.raises(ConfigError, match="class_weights"):
        parse_train_settings({"class_weights": [1, -1, 2]})
