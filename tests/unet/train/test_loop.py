import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import unet
from pipeline.errors import CheckpointError, ConfigError, OutputExistsError
from tests.unet.train.disks import Disks
from unet import UNet
from unet.train import TrainSettings, state_path, train

MEAN, STD = [110.0], [15.0]


def settings(**kw):
    base = {"threads": 1, "epochs": 2, "steps_per_epoch": 5, "batch": 4, "lr": 1e-2, "seed": 0}
    return TrainSettings(**{**base, **kw})


def small(**kw):
    torch.manual_seed(0)
    return UNet(1, kw.pop("classes", 1), base=kw.pop("base", 8), depth=kw.pop("depth", 2), **kw)


@pytest.mark.timeout(120)
def test_short_run_learns_the_synthetic_task(tmp_path):
    # Stated target: validation IoU >= 0.85 on disks after 80 steps (about 5 s on an idle core).
    result = train(
        small(),
        Disks(),
        tmp_path,
        classes=["disk"],
        mean=MEAN,
        std=STD,
        settings=settings(epochs=2, steps_per_epoch=40, batch=8),
        progress=False,
    )
    final = result.history[-1]
    assert final["val_iou"][0] >= 0.85, result.history
    assert result.history[0]["loss"] > final["loss"]
    assert result.best_epoch == max(range(1, 3), key=lambda e: result.history[e - 1]["val_score"])
    # checkpoints are ordinary gigaseg checkpoints carrying the preprocessing
    _, meta = unet.load(result.best)
    assert meta.mean == (110.0,) and meta.std == (15.0,) and meta.classes == ("disk",)
    assert meta.extra["train"]["epoch"] == result.best_epoch
    assert json.loads((tmp_path / "history.json").read_text())[-1]["epoch"] == 2
    assert state_path(result.last).is_file()


def test_resume_continues_from_the_same_step(tmp_path):
    data = Disks()
    straight = train(
        small(), data, tmp_path / "a", classes=["d"], mean=MEAN, std=STD,
        settings=settings(epochs=3), progress=False,
    )  # fmt: skip
    assert straight.steps == 15
    # the same run "interrupted" after epoch 1: resume from its epoch-1 checkpoint elsewhere
    partial = tmp_path / "c"
    train(
        small(), data, partial, classes=["d"], mean=MEAN, std=STD,
        settings=settings(epochs=3, keep_epochs=True), progress=False,
    )  # fmt: skip
    epoch1 = partial / "epoch-001.safetensors"
    resumed = train(
        small(),
        data,
        tmp_path / "d",
        classes=["d"],
        settings=settings(epochs=3),
        resume=epoch1,
        progress=False,
    )
    assert resumed.steps == 15
    assert resumed.best.is_file()
    assert [e["epoch"] for e in resumed.history] == [1, 2, 3]
    for a, b in zip(straight.history, resumed.history, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6, abs=1e-7)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-6, abs=1e-7)
    end_a, end_b = load_file(str(straight.last)), load_file(str(resumed.last))
    for key, value in end_a.items():
        torch.testing.assert_close(value, end_b[key], rtol=1e-5, atol=1e-6)


def test_existing_run_is_not_overwritten_and_bad_resume_is_refused(tmp_path):
    kw = {"classes": ["d"], "mean": MEAN, "std": STD, "progress": False}
    train(small(), Disks(), tmp_path, settings=settings(epochs=1, steps_per_epoch=1), **kw)
    with pytest.raises(OutputExistsError, match="resume"):
        train(small(), Disks(), tmp_path, settings=settings(epochs=1, steps_per_epoch=1), **kw)
    train(
        small(), Disks(), tmp_path, settings=settings(epochs=1, steps_per_epoch=1),
        overwrite=True, **kw,
    )  # fmt: skip
    with pytest.raises(CheckpointError, match="different architecture"):
        train(
            small(base=4), Disks(), tmp_path / "x", classes=["d"], progress=False,
            settings=settings(), resume=tmp_path / "last.safetensors",
        )  # fmt: skip
    with pytest.raises(ConfigError, match="mean and std"):
        train(small(), Disks(), tmp_path / "y", classes=["d"], progress=False)


def test_deep_supervision_multiclass_focal_and_bf16_run(tmp_path):
    model = small(classes=3, deep_supervision=True)
    result = train(
        model, Disks(classes=2), tmp_path, classes=["background", "disk", "square"],
        mean=MEAN, std=STD, settings=settings(epochs=1, loss="ce+dice", precision="bf16"),
        progress=False,
    )  # fmt: skip
    entry = result.history[0]
    assert result.precision == "bf16" and len(entry["val_iou"]) == 2
    assert np.isfinite(entry["loss"])
    focal = train(
        small(), Disks(), tmp_path / "f", classes=["d"], mean=MEAN, std=STD,
        settings=settings(epochs=1, loss="focal", schedule="cosine"), progress=False,
    )  # fmt: skip
    assert np.isfinite(focal.history[0]["loss"])


def test_valid_padding_model_trains_on_cropped_labels(tmp_path):
    model = small(padding="valid", norm="none")
    size = model.valid_input_size(48)
    result = train(
        model, Disks(size=size, n_val=2), tmp_path, classes=["d"], mean=MEAN, std=STD,
        settings=settings(epochs=1, steps_per_epoch=2), progress=False,
    )  # fmt: skip
    assert "val_iou" in result.history[0]
    with pytest.raises(ConfigError, match="does not fit the model"):
        train(
            small(), Disks(size=30), tmp_path / "odd", classes=["d"], mean=MEAN, std=STD,
            settings=settings(epochs=1, steps_per_epoch=1), progress=False,
        )  # fmt: skip
