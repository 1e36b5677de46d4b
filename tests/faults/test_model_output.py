"""The model: non-finite outputs, a halo below its receptive field, a file replaced in place.

- NaN/Inf weights (or an overflow) make every probability NaN, which used to be stored as 0:
  "complete", all background. Expected: the tile fails with one line naming the model and the
  tile; the store is not marked complete and no tile is marked done.
- ``--halo`` below the model's receptive-field halo is allowed but approximate. Expected: a
  one-line warning, ``exact: false`` in the store attributes and the report, and the store
  keeps the model's own halo apart from the halo used.
- A persistent scheduler's workers cache models. Expected: a file replaced at the same path is
  reloaded (the cache is keyed by content hash), so the store holds the new model's output
  and records its sha256.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import unet
from pipeline.errors import ApproximateWarning, ModelOutputError
from pipeline.infer.model import file_sha256
from pipeline.predict import predict
from tests.workflows.conftest import read_store, save_tiny_model, write_geotiff
from workflows.cli import main as cli
from workflows.run import store_attributes

pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
)


def ledger(store: Path) -> np.ndarray:
    import zarr

    return np.asarray(zarr.open_array(str(store / "tiles"), mode="r")[...])


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    return write_geotiff(tmp_path / "scene.tif", height=64, width=80, seed=3)


@pytest.fixture
def nan_model(tmp_path: Path) -> Path:
    path = save_tiny_model(tmp_path / "good.safetensors")
    model, meta = unet.load(path)
    with torch.no_grad():
        model.head.weight[0, 0, 0, 0] = float("nan")
    out = tmp_path / "nan.safetensors"
    unet.save(
        model,
        out,
        classes=list(meta.classes),
        bands=list(meta.bands or ()),
        mean=list(meta.mean),
        std=list(meta.std),
    )
    return out


# ------------------------------------------------------------------------------------------
# Non-finite output (issue 13 item 6)


def test_nan_weights_fail_the_tile_and_leave_the_store_incomplete(
    nan_model: Path, scene: Path, tmp_path: Path
) -> None:
    store = tmp_path / "out.zarr"
    with pytest.raises(ModelOutputError, match=r"nan\.safetensors gave \d+ non-finite"):
        predict(scene, nan_model, store, tile=32, workers=0, progress=False, precision="fp32")
    attrs = store_attributes(store)  # failed (with the reason), never left "running"
    assert attrs["status"] == "failed" and "non-finite" in attrs["error"]
    assert not (ledger(store) == 1).any()


def test_nan_weights_through_dask_workers_give_one_line(
    nan_model: Path, scene: Path, tmp_path: Path, local_client: Any
) -> None:
    store = tmp_path / "out.zarr"
    with pytest.raises(ModelOutputError, match=r"non-finite \(NaN/Inf\) value\(s\) for tile"):
        predict(scene, nan_model, store, tile=32, client=local_client, progress=False)
    assert store_attributes(store)["status"] == "failed"


def test_nan_weights_on_the_command_line(
    nan_model: Path, scene: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["predict", str(scene), "--model", str(nan_model), "--out", str(tmp_path / "o.zarr")]
    assert cli([*argv, "--tile", "32", "--workers", "0", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("gigaseg predict: error: model ")
    assert "non-finite" in err and "check the model" in err


# ------------------------------------------------------------------------------------------
# A halo below the receptive field (item 7)


def test_a_small_halo_warns_and_is_recorded_as_not_exact(
    tiny_model: Path, scene: Path, tmp_path: Path
) -> None:
    exact_store, small_store = tmp_path / "auto.zarr", tmp_path / "small.zarr"
    kwargs: dict[str, Any] = {"tile": 32, "workers": 0, "progress": False, "precision": "fp32"}
    exact = predict(scene, tiny_model, exact_store, **kwargs)
    with pytest.warns(ApproximateWarning, match=r"halo 4 is smaller than model tiny's 24"):
        small = predict(scene, tiny_model, small_store, halo=4, **kwargs)
    assert (exact.exact, exact.halo, exact.model_halo) == (True, 24, 24)
    assert (small.exact, small.halo, small.model_halo) == (False, 4, 24)
    attrs = store_attributes(small_store)
    assert attrs["exact"] is False and attrs["halo"] == 4 and attrs["model"]["halo"] == 24
    assert store_attributes(exact_store)["exact"] is True
    # The warning is true: the approximate store differs from the exact one.
    assert (
        np.abs(
            read_store(exact_store)[0].astype(int) - read_store(small_store)[0].astype(int)
        ).max()
        > 0
    )


@pytest.mark.filterwarnings("default::pipeline.errors.ApproximateWarning")
def test_the_small_halo_warning_is_one_line_on_the_command_line(
    tiny_model: Path, scene: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "r.json"
    argv = ["predict", str(scene), "--model", str(tiny_model), "--out", str(tmp_path / "o.zarr")]
    argv += ["--tile", "32", "--halo", "8", "--workers", "0", "--no-progress"]
    assert cli([*argv, "--report", str(report)]) == 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("gigaseg predict: warning: halo 8 is smaller than model tiny's 24")
    assert "\n" not in err
    assert json.loads(report.read_text())["exact"] is False


# ------------------------------------------------------------------------------------------
# A model file replaced at the same path (item 11)


@pytest.mark.timeout(300)
def test_a_replaced_model_file_is_reloaded_by_long_lived_workers(
    scene: Path, tmp_path: Path, local_client: Any
) -> None:
    first = save_tiny_model(tmp_path / "first.safetensors", seed=1)
    second = save_tiny_model(tmp_path / "second.safetensors", seed=2)
    path = tmp_path / "model.safetensors"
    kwargs: dict[str, Any] = {"tile": 32, "progress": False, "precision": "fp32"}
    shutil.copyfile(first, path)
    predict(scene, path, tmp_path / "a.zarr", client=local_client, **kwargs)
    shutil.copyfile(second, path)  # same path, new weights; the workers stay up
    predict(scene, path, tmp_path / "b.zarr", client=local_client, **kwargs)
    predict(scene, second, tmp_path / "ref.zarr", workers=0, **kwargs)
    probs_b, labels_b = read_store(tmp_path / "b.zarr")
    probs_ref, labels_ref = read_store(tmp_path / "ref.zarr")
    np.testing.assert_array_equal(probs_b, probs_ref)
    np.testing.assert_array_equal(labels_b, labels_ref)
    assert not np.array_equal(read_store(tmp_path / "a.zarr")[0], probs_b)  # not vacuous
    assert store_attributes(tmp_path / "b.zarr")["model"]["sha256"] == file_sha256(second)
