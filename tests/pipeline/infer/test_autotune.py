"""``--patch auto``: the measured choice is exact against the reference and cached per machine
and model (a second run reuses it without measuring)."""

import json

import numpy as np
import pytest
import zarr

from pipeline.errors import ConfigError
from pipeline.infer import Predictor, autotune, describe_model, reference_predict
from pipeline.predict import predict
from tests.pipeline.read.synthetic import write_geotiff
from tests.pipeline.tinynet import TinyUNet, save_torchscript


@pytest.fixture
def tuning(tmp_path, monkeypatch):
    """A private cache, and tuning for any job size (tests use tiny images)."""
    monkeypatch.setenv(autotune.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(autotune, "TUNE_MIN_PIXELS", 0)
    return tmp_path / "cache" / "autotune.json"


def test_candidates_are_aligned_and_end_at_the_tile():
    assert autotune.candidate_patches(2048, 16, 112) == [256, 512, 1024, 2048]
    assert autotune.candidate_patches(96, 16, 28) == [64, 96]
    assert all(p % 32 == 0 for p in autotune.candidate_patches(4096, 32, 100))
    assert autotune.batch_for(2272) == 1 and autotune.batch_for(512) == autotune.MAX_BATCH


def test_auto_patch_is_exact_and_the_choice_is_cached(tmp_path, tuning, monkeypatch):
    model = save_torchscript(TinyUNet(seed=4), tmp_path / "tiny.pt")
    image = np.random.default_rng(3).integers(0, 256, (3, 150, 170)).astype(np.uint8)
    path = write_geotiff(tmp_path / "in.tif", image)
    info, net = describe_model(str(model))
    reference = reference_predict(
        Predictor(net, info, precision="fp32"),
        image,
        halo=info.halo,
        sizes=info.sizes,
        padding=info.padding,
    )
    options = {"tile": 128, "precision": "fp32", "probabilities": "float32", "progress": False}

    calls = []
    real = autotune.measure

    def counted(*args, **kwargs):
        calls.append(args[2:4])  # (window, batch)
        return real(*args, **kwargs)

    monkeypatch.setattr(autotune, "measure", counted)
    predict(path, model, tmp_path / "first.zarr", workers=0, **options)
    assert calls, "the first run measures"
    entries = json.loads(tuning.read_text())
    (key,) = entries
    chosen = entries[key]
    assert info.sha256 in key and "fp32" in key
    assert chosen["patch"] in autotune.candidate_patches(128, info.alignment, info.halo)
    group = zarr.open_group(str(tmp_path / "first.zarr"), mode="r")
    assert group.attrs["patch"] == chosen["patch"] and group.attrs["batch"] == chosen["batch"]
    first = group["probabilities"][...]
    assert np.abs(first - reference).max() <= 1e-4

    calls.clear()
    predict(path, model, tmp_path / "second.zarr", workers=0, **options)
    assert calls == [], "a cached choice is reused without measuring"
    second = zarr.open_group(str(tmp_path / "second.zarr"), mode="r")
    assert second.attrs["patch_tuning"]["cached"] is True
    np.testing.assert_array_equal(second["probabilities"][...], first)

    # Every candidate size gives the reference (the choice can never change the output).
    for patch in autotune.candidate_patches(128, info.alignment, info.halo):
        out = tmp_path / f"p{patch}.zarr"
        predict(path, model, out, workers=0, patch=patch, **options)
        probs = zarr.open_group(str(out), mode="r")["probabilities"][...]
        assert np.abs(probs - reference).max() <= 1e-4, patch


def test_explicit_patch_is_honoured_and_not_tuned(tmp_path, tuning):
    model = save_torchscript(TinyUNet(seed=4), tmp_path / "tiny.pt")
    image = np.random.default_rng(3).integers(0, 256, (3, 70, 90)).astype(np.uint8)
    path = write_geotiff(tmp_path / "in.tif", image)
    predict(path, model, tmp_path / "o.zarr", tile=64, patch=32, workers=0, progress=False)
    assert zarr.open_group(str(tmp_path / "o.zarr"), mode="r").attrs["patch"] == 32
    assert not tuning.exists()
    with pytest.raises(ConfigError, match="patch 'x' must be auto or an integer"):
        predict(path, model, tmp_path / "p.zarr", patch="x", workers=0, progress=False)


def _tiny_setup(tmp_path):
    model = save_torchscript(TinyUNet(seed=4), tmp_path / "tiny.pt")
    image = np.random.default_rng(5).integers(0, 256, (3, 150, 170)).astype(np.uint8)
    path = write_geotiff(tmp_path / "in.tif", image)
    info, net = describe_model(str(model))
    reference = reference_predict(
        Predictor(net, info, precision="fp32"),
        image,
        halo=info.halo,
        sizes=info.sizes,
        padding=info.padding,
    )
    return model, path, info, net, reference


def test_the_first_layer_width_sizes_the_memory_estimate(tmp_path):
    net = _tiny_setup(tmp_path)[3]
    assert autotune.first_width(net) == 4  # TinyUNet's base
    assert autotune.first_width(object()) is None  # an onnxruntime session: unknown
    one = autotune.call_bytes(4, 184, 1, "fp32")
    assert autotune.call_bytes(4, 184, 3, "fp32") == 3 * one
    assert autotune.call_bytes(4, 184, 1, "bf16") == one // 2
    assert autotune.call_bytes(None, 4096, 8) == 0
    assert autotune.fit_batch(4, 184, 4, budget=2 * one) == 2
    assert autotune.fit_batch(4, 184, 4, budget=one - 1) == 0


def test_tuning_never_tries_a_call_over_the_memory_budget(tmp_path, tuning, monkeypatch):
    model, path, info, net, reference = _tiny_setup(tmp_path)
    width, halo = autotune.first_width(net), info.halo
    patches = autotune.candidate_patches(256, info.alignment, halo)
    assert len(patches) >= 3
    budget = autotune.call_bytes(width, patches[1] + 2 * halo, 1, "fp32")
    monkeypatch.setattr(autotune, "CALL_MEMORY", budget)
    tried = []
    real = autotune.measure

    def counted(forward, channels, window, batch, seconds=0.0):
        tried.append((window, batch))
        return real(forward, channels, window, batch, seconds)

    monkeypatch.setattr(autotune, "measure", counted)
    options = {"tile": 256, "precision": "fp32", "probabilities": "float32", "progress": False}
    predict(path, model, tmp_path / "t.zarr", workers=0, **options)
    assert tried
    assert all(autotune.call_bytes(width, w, b, "fp32") <= budget for w, b in tried), tried
    group = zarr.open_group(str(tmp_path / "t.zarr"), mode="r")
    assert group.attrs["patch"] <= patches[1]
    assert (
        autotune.call_bytes(width, group.attrs["patch"] + 2 * halo, group.attrs["batch"]) <= budget
    )
    assert np.abs(group["probabilities"][...] - reference).max() <= 1e-4


def test_a_cached_choice_over_the_budget_is_measured_again(tmp_path, tuning, monkeypatch):
    _, _, info, net, _ = _tiny_setup(tmp_path)
    forward = Predictor(net, info, precision="fp32")
    width, halo = autotune.first_width(net), info.halo
    patches = autotune.candidate_patches(256, info.alignment, halo)
    tried = []

    def equal_seconds(forward, channels, window, batch):  # every call 1 s: the largest wins
        tried.append(window)
        return 1.0

    args = {
        "key": "k", "tile": 256, "alignment": info.alignment, "halo": halo, "channels": 3,
        "window_of": lambda p: p + 2 * halo, "measure_call": equal_seconds, "width": width,
    }  # fmt: skip
    patch, _, record = autotune.choose_call_size(forward, **args)
    assert patch == patches[-1] and record["cached"] is False
    assert autotune.choose_call_size(forward, **args)[2]["cached"] is True
    monkeypatch.setattr(
        autotune, "CALL_MEMORY", autotune.call_bytes(width, patches[0] + 2 * halo, 1)
    )
    tried.clear()
    patch, batch, record = autotune.choose_call_size(forward, **args)
    assert record["cached"] is False and tried == [patches[0] + 2 * halo] * 2
    assert (patch, batch) == (patches[0], 1)


def test_untuned_calls_are_capped_too_and_stay_exact(tmp_path, tuning, monkeypatch):
    model, path, info, net, reference = _tiny_setup(tmp_path)
    monkeypatch.setattr(autotune, "TUNE_MIN_PIXELS", 10**12)  # a small job: no measurement
    width, halo = autotune.first_width(net), info.halo
    budget = autotune.call_bytes(width, 64 + 2 * halo, 2, "fp32")
    monkeypatch.setattr(autotune, "CALL_MEMORY", budget)
    options = {"tile": 256, "precision": "fp32", "probabilities": "float32", "progress": False}
    predict(path, model, tmp_path / "u.zarr", workers=0, **options)
    group = zarr.open_group(str(tmp_path / "u.zarr"), mode="r")
    assert group.attrs["patch_tuning"] is None and not tuning.exists()
    patch, batch = group.attrs["patch"], group.attrs["batch"]
    assert patch == 64 and batch == 2  # 256 and 128 would not fit; DEFAULT_BATCH 4 neither
    assert np.abs(group["probabilities"][...] - reference).max() <= 1e-4
