"""pipeline.predict end to end: exactness against the whole-image reference, workers,
real files, resume after a kill, and the three model formats."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

import pipeline
from pipeline.errors import ConfigError, InputError, StaleLockWarning
from pipeline.infer import Predictor, describe_model, reference_predict
from pipeline.predict import predict
from pipeline.read import open_source
from pipeline.runner import environ_kept
from pipeline.tile import Window
from tests.pipeline.read.synthetic import write_geotiff, xy_image
from tests.pipeline.tinynet import TinyUNet, save_torchscript

# distributed leaves an unbound socket to the garbage collector when a cluster closes
pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
)

DATA = Path(__file__).parents[1] / "data"
ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    return {
        "same": save_torchscript(TinyUNet(padding="same", seed=0), folder / "same.pt"),
        "valid": save_torchscript(TinyUNet(padding="valid", seed=1), folder / "valid.pt"),
        "deep": save_torchscript(
            TinyUNet(padding="same", depth=3, classes=3, seed=2), folder / "deep.pt"
        ),
    }


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with (
        environ_kept(),  # the nannies write their workers' settings into os.environ
        LocalCluster(
            n_workers=2,
            threads_per_worker=2,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as c,
    ):
        yield c


def _random(rows, cols, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (3, rows, cols)).astype(np.uint8)


def _reference(model_path, image):
    info, net = describe_model(str(model_path))
    forward = Predictor(net, info, precision="fp32")
    return reference_predict(forward, image, halo=info.halo, sizes=info.sizes, padding=info.padding)


def _stored(store):
    group = zarr.open_group(str(store), mode="r")
    return group["probabilities"][...], group["labels"][...], dict(group.attrs)


CASES = [
    # (name, rows, cols, model, tile, patch)
    ("1000x1300", 1000, 1300, "same", 256, None),
    ("1000x1300-patches", 1000, 1300, "same", 512, 128),
    ("37x53", 37, 53, "same", 64, None),
    ("37x53-deep", 37, 53, "deep", 64, None),
    ("one-tile", 64, 64, "same", 64, None),
    ("one-pixel-wider", 64, 65, "same", 64, None),
    ("valid-37x53", 37, 53, "valid", 32, None),
    ("valid-odd", 150, 97, "valid", 32, 16),
    ("valid-one-pixel-wider", 64, 65, "valid", 64, None),
]


@pytest.mark.parametrize(
    ("name", "rows", "cols", "kind", "tile", "patch"), CASES, ids=[c[0] for c in CASES]
)
def test_tiled_equals_whole_image_reference(tmp_path, models, name, rows, cols, kind, tile, patch):
    image = _random(rows, cols)
    reference = _reference(models[kind], image)
    report = predict(
        image,
        models[kind],
        tmp_path / "out.zarr",
        tile=tile,
        patch=patch,
        workers=0,
        probabilities="float32",
        precision="fp32",
        progress=False,
    )
    probs, labels, attrs = _stored(tmp_path / "out.zarr")
    assert probs.dtype == np.float32 and probs.shape == reference.shape
    assert np.abs(probs - reference).max() <= 1e-4
    assert attrs["status"] == "complete"
    assert report.tiles_computed == report.tiles_total
    expected_labels = (reference[0] >= 0.5) if kind != "deep" else reference.argmax(0)
    assert (labels == expected_labels).mean() > 0.999


def test_tile_sizes_agree(tmp_path, models):
    image = _random(120, 100, seed=4)
    outs = []
    for tile in (32, 64, 128):
        predict(
            image,
            models["same"],
            tmp_path / f"{tile}.zarr",
            tile=tile,
            workers=0,
            probabilities="float32",
            precision="fp32",
            progress=False,
        )
        outs.append(_stored(tmp_path / f"{tile}.zarr")[0])
    assert np.abs(outs[0] - outs[1]).max() <= 1e-4
    assert np.abs(outs[0] - outs[2]).max() <= 1e-4


def test_one_and_two_workers_equal_the_reference_and_load_once(tmp_path, models, client):
    image = _random(150, 230, seed=5)
    path = write_geotiff(tmp_path / "in.tif", image)
    reference = _reference(models["same"], image)
    two = predict(
        path,
        models["same"],
        tmp_path / "two.zarr",
        tile=32,
        client=client,
        probabilities="float32",
        precision="fp32",
        progress=False,
    )
    assert two.workers == 2 and two.tiles_computed == 40
    assert np.abs(_stored(tmp_path / "two.zarr")[0] - reference).max() <= 1e-4
    counts = client.run(
        lambda: dict(__import__("pipeline.infer.model", fromlist=["_"]).LOAD_COUNTS)
    )
    per_worker = [c.get(str(models["same"]), 0) for c in counts.values()]
    assert sum(per_worker) >= 1 and max(per_worker) == 1  # 40 tasks, at most one load each

    one = predict(
        path,
        models["same"],
        tmp_path / "one.zarr",
        tile=64,
        workers=1,
        probabilities="float32",
        precision="fp32",
        progress=False,
    )
    assert one.workers == 1
    assert np.abs(_stored(tmp_path / "one.zarr")[0] - reference).max() <= 1e-4


def test_numpy_source_on_a_cluster_and_callback(tmp_path, models, client):
    image = _random(90, 70, seed=6)
    seen = []
    report = pipeline.predict(
        image,
        models["valid"],
        tmp_path / "o.zarr",
        tile=32,
        client=client,
        probabilities="float32",
        precision="fp32",
        progress=False,
        on_tile=lambda done, total: seen.append((done, total)),
    )
    assert seen[-1] == (report.tiles_computed, report.tiles_computed) == (9, 9)
    assert (
        np.abs(_stored(tmp_path / "o.zarr")[0] - _reference(models["valid"], image)).max() <= 1e-4
    )
    data = report.to_dict()
    assert set(data["seconds"]) == {
        "read",
        "normalise",
        "wait",
        "infer",
        "encode",
        "write",
        "total",
    }
    assert 0.0 <= data["bottleneck"]["model_busy"] <= 1.0
    assert data["bottleneck"]["bound"] in ("model", "input/output")
    assert data["megapixels"] == pytest.approx(90 * 70 / 1e6)
    assert data["peak_worker_memory"] > 0


def test_interrupted_run_resumes_on_the_cluster(tmp_path, models, client):
    image = _random(128, 160, seed=7)
    store = tmp_path / "o.zarr"

    def stop(done, total):
        if done == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        predict(
            image,
            models["same"],
            store,
            tile=32,
            client=client,
            probabilities="float32",
            precision="fp32",
            progress=False,
            on_tile=stop,
        )
    assert _stored(store)[2]["status"] == "interrupted"  # Ctrl-C says so (issue 13 item 16)
    report = predict(
        image,
        models["same"],
        store,
        tile=32,
        client=client,
        probabilities="float32",
        precision="fp32",
        progress=False,
        resume=True,
    )
    assert report.tiles_already_done == 7 and report.tiles_computed == 20 - 7
    assert np.abs(_stored(store)[0] - _reference(models["same"], image)).max() <= 1e-4


KILLED_RUN = textwrap.dedent(
    """
    import sys, time
    from pipeline.predict import predict
    predict(sys.argv[1], sys.argv[2], sys.argv[3], tile=32, workers=0, progress=False,
            on_tile=lambda done, total: time.sleep(0.05))
    """
)


def test_killed_run_resumes_to_the_same_store(tmp_path, models):
    path = write_geotiff(tmp_path / "in.tif", _random(256, 256, seed=8))
    store = tmp_path / "killed.zarr"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUN, str(path), str(models["same"]), str(store)],
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 120
        done = 0
        while time.monotonic() < deadline and proc.poll() is None:
            if (store / "tiles" / "zarr.json").exists():
                done = int((zarr.open_array(str(store / "tiles"), mode="r")[...] == 1).sum())
                if done >= 8:
                    break
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert _stored(store)[2]["status"] == "running"
    ledger = zarr.open_array(str(store / "tiles"), mode="r")[...]
    done_before = int((ledger == 1).sum())
    assert 8 <= done_before < 64
    with pytest.warns(StaleLockWarning, match=r"killed\.zarr from run .* no longer running"):
        report = predict(
            path, models["same"], store, tile=32, workers=0, progress=False, resume=True
        )
    assert report.tiles_already_done == done_before
    assert report.tiles_computed == 64 - done_before
    predict(path, models["same"], tmp_path / "whole.zarr", tile=32, workers=0, progress=False)
    resumed, whole = _stored(store), _stored(tmp_path / "whole.zarr")
    assert np.array_equal(resumed[0], whole[0])
    assert np.array_equal(resumed[1], whole[1])
    assert resumed[2]["status"] == "complete"


def test_landsat_collar_is_skipped_and_georeference_kept(tmp_path, models):
    landsat = DATA / "geotiff" / "RGB.byte.tif"
    store = tmp_path / "landsat.zarr"
    report = predict(landsat, models["same"], store, tile=128, workers=0, progress=False)
    probs, _, attrs = _stored(store)
    import rasterio

    with rasterio.open(landsat) as dataset:
        assert attrs["transform"] == list(dataset.transform.to_gdal())
        assert attrs["crs"] == dataset.crs.to_wkt()
        mask = dataset.dataset_mask() > 0
    assert report.tiles_skipped == 7  # the corner tiles of the collar hold no data at all
    assert report.tiles_computed + report.tiles_skipped == report.tiles_total == 6 * 7
    ledger = zarr.open_array(str(store / "tiles"), mode="r")[...]
    for row, col in zip(*np.nonzero(ledger == 2), strict=True):
        core = (slice(row * 128, row * 128 + 128), slice(col * 128, col * 128 + 128))
        assert not mask[core].any()  # skipped tiles hold only nodata...
        assert not probs[(slice(None), *core)].any()  # ...and stay unwritten
    assert (ledger == 1).sum() == report.tiles_computed


def test_jpeg_cog(tmp_path, models):
    report = predict(
        DATA / "geotiff" / "cogeo.tif",
        models["same"],
        tmp_path / "cog.zarr",
        tile=256,
        workers=0,
        progress=False,
    )
    probs, _, attrs = _stored(tmp_path / "cog.zarr")
    assert probs.shape == (1, 1024, 1024) and probs.dtype == np.uint8
    assert "3857" in attrs["crs"] and report.tiles_computed == 16


def test_aperio_svs_mpp_and_level0_frame(tmp_path, models):
    svs = DATA / "wsi" / "CMU-1-Small-Region.svs"
    report = predict(
        svs,
        models["same"],
        tmp_path / "slide.zarr",
        mpp=0.499 * 4,
        tile=128,
        workers=0,
        progress=False,
    )
    probs, _, attrs = _stored(tmp_path / "slide.zarr")
    assert attrs["mpp"] == pytest.approx(1.996)
    assert attrs["downsample"] == pytest.approx(4.0)
    assert attrs["level0_shape"] == [2967, 2220] and attrs["frame"] == "level0"
    assert probs.shape[1:] == (741, 555)
    assert report.tiles_total == 6 * 5
    assert report.tiles_computed + report.tiles_skipped == report.tiles_total
    level0 = predict(
        svs,
        models["same"],
        tmp_path / "l0.zarr",
        tile=1024,
        workers=0,
        progress=False,
        level=0,
        probabilities="uint8",
    )
    assert level0.tiles_total == 9
    assert _stored(tmp_path / "l0.zarr")[2]["mpp"] == pytest.approx(0.499)


def test_foreign_model_needs_a_halo(tmp_path):
    path = save_torchscript(TinyUNet(classes=2), tmp_path / "foreign.pt", metadata=False)
    image = _random(40, 40)
    with pytest.raises(ConfigError, match="give --halo N"):
        predict(image, path, tmp_path / "a.zarr", tile=32, workers=0, progress=False)
    assert not (tmp_path / "a.zarr").exists()
    report = predict(image, path, tmp_path / "b.zarr", tile=32, halo=28, workers=0, progress=False)
    assert _stored(tmp_path / "b.zarr")[2]["classes"] == ["class0", "class1"]
    assert report.status == "complete"


def test_band_checks(tmp_path, models):
    with pytest.raises(InputError, match="expects 3"):
        predict(xy_image(1, 40, 40), models["same"], tmp_path / "a.zarr", workers=0, tile=32)
    with pytest.raises(ConfigError, match="out of range"):
        predict(
            xy_image(3, 40, 40),
            models["same"],
            tmp_path / "a.zarr",
            workers=0,
            tile=32,
            bands=[1, 2, 4],
        )
    four = xy_image(4, 40, 40)
    report = predict(
        four, models["same"], tmp_path / "c.zarr", workers=0, tile=32, bands="3,2,1", progress=False
    )
    assert report.status == "complete"
    assert _stored(tmp_path / "c.zarr")[2]["bands"] == [3, 2, 1]


def test_gigaseg_checkpoint_torchscript_and_onnx_agree(tmp_path):
    unet = pytest.importorskip("unet")
    import torch

    model = unet.UNet(in_channels=3, classes=2, base=4, depth=2)
    torch.manual_seed(0)
    for param in model.parameters():
        torch.nn.init.normal_(param, std=0.3)
    ckpt = tmp_path / "m.safetensors"
    unet.save(
        model,
        ckpt,
        classes=["background", "building"],
        bands=[1, 2, 3],
        mean=[120.0] * 3,
        std=[60.0] * 3,
    )
    loaded, meta = unet.load(ckpt)
    unet.export(loaded, meta, tmp_path / "m.pt", format="torchscript")
    unet.export(loaded, meta, tmp_path / "m.onnx", format="onnx")
    image = _random(70, 90, seed=9)
    reference = _reference(ckpt, image)
    for name in ("m.safetensors", "m.pt", "m.onnx"):
        store = tmp_path / f"{name}.zarr"
        predict(
            image,
            tmp_path / name,
            store,
            tile=32,
            workers=0,
            probabilities="float32",
            precision="fp32",
            progress=False,
        )
        probs, _, attrs = _stored(store)
        assert np.abs(probs - reference).max() <= 1e-4, name
        assert attrs["halo"] == loaded.halo and attrs["classes"] == ["background", "building"]
    assert attrs["model"]["kind"] == "onnx"


def test_existing_store_and_resume_mismatch(tmp_path, models):
    image = _random(40, 40)
    store = tmp_path / "o.zarr"
    predict(image, models["same"], store, tile=32, workers=0, progress=False)
    with pytest.raises(FileExistsError, match="--overwrite"):
        predict(image, models["same"], store, tile=32, workers=0, progress=False)
    with pytest.raises(OSError, match=r"cannot resume .*tile"):
        predict(image, models["same"], store, tile=64, workers=0, progress=False, resume=True)
    report = predict(image, models["same"], store, tile=32, workers=0, progress=False, resume=True)
    assert report.tiles_computed == 0 and report.tiles_already_done == 4
    predict(image, models["valid"], store, tile=32, workers=0, progress=False, overwrite=True)
    assert _stored(store)[2]["model"]["padding"] == "valid"


def test_read_window_matches_tile_plan(models):
    # a slide window is read through the same mirror as the reference
    source = open_source(DATA / "wsi" / "CMU-1-Small-Region.svs", mpp=0.499 * 8)
    assert source.read(Window(-28, -28, 64, 64)).shape == (3, 64, 64)


def test_scheduler_address(tmp_path, models, client):
    image = _random(40, 70, seed=10)
    report = predict(
        image,
        models["same"],
        tmp_path / "s.zarr",
        tile=32,
        scheduler=client.scheduler.address,
        probabilities="float32",
        precision="fp32",
        progress=False,
    )
    assert report.workers == 2 and report.tiles_computed == 6
    assert np.abs(_stored(tmp_path / "s.zarr")[0] - _reference(models["same"], image)).max() <= 1e-4
