"""The accelerator-shaped worker: a bounded queue ahead of one model thread, activation and
encoding on the device, and stores identical with and without it."""

import threading
import time

import numpy as np
import pytest
import torch
import zarr

from pipeline.infer import Predictor, describe_model
from pipeline.infer.feed import Feed, bottleneck, recommend_readers
from pipeline.infer.model import ModelInfo
from pipeline.infer.predictor import activate
from pipeline.predict import predict
from pipeline.stitch.assemble import to_labels
from pipeline.store.encoding import to_stored
from pipeline.tile.grid import InputSizes
from tests.pipeline.read.synthetic import write_geotiff
from tests.pipeline.tinynet import TinyUNet, save_torchscript


class _Slow(torch.nn.Module):
    """Identity with a pause, so batches pile up in front of the model."""

    def __init__(self, pause: float) -> None:
        super().__init__()
        self.pause = pause

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.pause)
        return x.clone()


def _info(activation: str = "sigmoid") -> ModelInfo:
    return ModelInfo(
        path="slow",
        kind="torch",
        loader="",
        name="slow",
        sha256="",
        halo=0,
        alignment=1,
        padding="same",
        sizes=InputSizes(1, 1),
        in_channels=1,
        classes=("c",),
        outputs=1,
        activation=activation,
    )


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("feed-models")
    return {
        "one": save_torchscript(TinyUNet(padding="same", seed=3), folder / "one.pt"),
        "three": save_torchscript(TinyUNet(padding="same", classes=3, seed=4), folder / "three.pt"),
    }


def test_queue_stays_bounded_and_results_keep_their_order():
    feed = Feed(Predictor(_Slow(0.02), _info(), device="cpu", precision="fp32"), depth=2)
    futures = {}

    def reader(offset: int) -> None:
        for i in range(offset, 24, 3):
            # batch i holds logit (i - 12) / 4 everywhere: its encoding identifies it
            raw = np.full((1, 1, 8, 8), (i - 12) / 4, np.float32)
            futures[i] = feed.submit(raw, "float32", 0.5)

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, future in futures.items():
        stored, labels = future.result(timeout=30)
        expected = 1 / (1 + np.exp(-(i - 12) / 4))
        assert np.allclose(stored, expected, atol=1e-6), i
        assert (labels == (expected >= 0.5)).all()
    stats = feed.stats()
    feed.close()
    assert stats.batches == 24
    assert 1 <= stats.high_water <= 2  # the readers outran the model, and were held back
    assert stats.busy_s >= 24 * 0.02


def test_a_failing_batch_fails_its_own_task_only():
    class Picky(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.shape[-1] == 5:
                raise RuntimeError("expected width 8")
            return x.clone()

    feed = Feed(Predictor(Picky(), _info(), device="cpu", precision="fp32"), depth=1)
    bad = feed.submit(np.zeros((1, 1, 8, 5), np.float32), "uint8", 0.5)
    good = feed.submit(np.zeros((1, 1, 8, 8), np.float32), "uint8", 0.5)
    with pytest.raises(RuntimeError, match="expected width 8"):
        bad.result(timeout=30)
    assert good.result(timeout=30)[0].shape == (1, 1, 8, 8)
    feed.close()


@pytest.mark.parametrize(("name", "activation"), [("one", "sigmoid"), ("three", "softmax")])
@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_device_encoding_matches_the_store_encoding(tiny, name, activation, dtype):
    info, net = describe_model(str(tiny[name]))
    predictor = Predictor(net, info, device="cpu", precision="fp32")
    raw = np.random.default_rng(0).integers(0, 256, (2, 3, 64, 96)).astype(np.uint8)
    probs = predictor(raw)  # float32, activation in numpy: the path before the feed
    stored, labels = predictor.encode(raw, dtype, 0.5)
    expected_labels = np.stack([to_labels(p, info.activation, 0.5) for p in probs])
    expected = to_stored(probs, dtype)
    if dtype == "float32":
        assert np.abs(stored - expected).max() <= 1e-6
    else:
        # torch and numpy exp differ in the last float bit: a uint8 level may round the other
        # way only where p * 255 sits on a .5 boundary
        off = stored.astype(int) - expected.astype(int)
        assert np.abs(off).max() <= 1
        boundary = np.abs(probs * 255 - np.floor(probs * 255) - 0.5) < 1e-4
        assert (boundary | (off == 0)).all()
    near = np.abs(probs.max(axis=1) - 0.5) < 1e-6 if name == "one" else np.zeros_like(labels, bool)
    assert ((labels == expected_labels) | near).all()


def _store(path):
    group = zarr.open_group(str(path), mode="r")
    return group["probabilities"][...], group["labels"][...]


@pytest.mark.parametrize("dtype", ["uint8", "float16"])
def test_prefetch_gives_the_same_store_as_the_model_in_the_task_thread(tmp_path, tiny, dtype):
    image = np.random.default_rng(1).integers(0, 256, (3, 200, 170)).astype(np.uint8)
    path = write_geotiff(tmp_path / "in.tif", image)
    stores = {}
    for prefetch in (0, 1, 3):
        store = tmp_path / f"p{prefetch}.zarr"
        report = predict(
            path,
            tiny["three"],
            store,
            tile=64,
            patch=32,
            batch=1,
            workers=0,
            precision="fp32",
            probabilities=dtype,
            prefetch=prefetch,
            progress=False,
        )
        assert report.tiles_computed == 12
        stores[prefetch] = _store(store)
    for prefetch in (1, 3):
        assert np.array_equal(stores[prefetch][0], stores[0][0])
        assert np.array_equal(stores[prefetch][1], stores[0][1])
    assert report.bottleneck["bound"] in ("model", "input/output")
    assert 0.0 < report.bottleneck["model_busy"] <= 1.0


def test_interrupted_with_batches_in_flight_resumes_to_the_same_store(tmp_path, tiny):
    image = np.random.default_rng(2).integers(0, 256, (3, 192, 192)).astype(np.uint8)
    path = write_geotiff(tmp_path / "in.tif", image)
    options = dict(
        tile=64, patch=16, batch=1, workers=0, precision="fp32", prefetch=2, progress=False
    )

    def stop(done, total):
        if done == 4:
            raise KeyboardInterrupt

    store = tmp_path / "o.zarr"
    with pytest.raises(KeyboardInterrupt):
        predict(path, tiny["one"], store, on_tile=stop, **options)
    group = zarr.open_group(str(store), mode="r")
    assert group.attrs["status"] == "interrupted"  # issue 13 item 16: says so, not running
    done = int((group["tiles"][...] == 1).sum())
    assert 4 <= done < 9
    report = predict(path, tiny["one"], store, resume=True, **options)
    assert report.tiles_already_done == done and report.tiles_computed == 9 - done
    predict(path, tiny["one"], tmp_path / "whole.zarr", **options)
    for ours, theirs in zip(_store(store), _store(tmp_path / "whole.zarr"), strict=True):
        assert np.array_equal(ours, theirs)


def test_bottleneck_names_the_limit():
    io_bound = bottleneck(100.0, 50.0, 5.0, 90.0, 1, 2)
    assert io_bound["bound"] == "input/output"
    assert io_bound["model_busy"] == pytest.approx(0.1)
    assert "reader threads" in io_bound["advice"]
    model_bound = bottleneck(100.0, 10.0, 9.5, 4.0, 1, 2)
    assert model_bound["bound"] == "model" and model_bound["model_mpx_per_s"] == pytest.approx(
        100 / 9.5, rel=1e-3
    )
    assert recommend_readers(model_s=2.0, io_s=9.0) == 6


def test_feed_depth_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        Feed(Predictor(_Slow(0), _info(), device="cpu", precision="fp32"), depth=0)


@pytest.mark.gpu
def test_cuda_feed_equals_cpu(tiny):  # pragma: no cover - needs a GPU
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    info, net = describe_model(str(tiny["three"]))
    raw = np.random.default_rng(3).integers(0, 256, (4, 3, 64, 64)).astype(np.uint8)
    cpu = Predictor(net, info, device="cpu", precision="fp32").encode(raw, "float32", 0.5)
    feed = Feed(Predictor(net, info, device="cuda", precision="fp32"), depth=2)
    futures = [feed.submit(raw[i : i + 1], "float32", 0.5) for i in range(4)]
    gpu = [f.result() for f in futures]
    feed.close()
    assert np.abs(np.concatenate([g[0] for g in gpu]) - cpu[0]).max() <= 1e-4


def _onnx_pointwise(path, outputs: int):
    """A 1x1 convolution from one band to ``outputs`` channels as ONNX (a foreign model)."""
    import warnings

    conv = torch.nn.Conv2d(1, outputs, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.linspace(-0.25, 0.2, outputs).reshape(outputs, 1, 1, 1))
        conv.bias.copy_(torch.linspace(20.0, -10.0, outputs))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            conv,
            (torch.zeros(1, 1, 16, 16),),
            str(path),
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n", 2: "h", 3: "w"}},
            dynamo=False,
        )
    return path


@pytest.mark.parametrize("outputs", [1, 3])
def test_an_onnx_model_encoded_by_the_readers_gives_the_whole_batch_store(tmp_path, outputs):
    model = _onnx_pointwise(tmp_path / f"m{outputs}.onnx", outputs)
    # logits from -10 to 20: saturated and mid-range sigmoid levels, p = 0.5 at logit 0
    image = np.random.default_rng(4).integers(0, 256, (1, 150, 130)).astype(np.uint8)
    image[0, :2, :2] = [[80, 81], [0, 255]]  # 20 - 0.25 * 80 = 0: p = 0.5, the threshold
    path = write_geotiff(tmp_path / "in.tif", image)
    info, net = describe_model(str(model))
    logits = Predictor(net, info).logits(image[None].astype(np.float32))
    activation = "sigmoid" if outputs == 1 else "softmax"
    probs = activate(logits, activation)
    assert logits[0, 0, 0, 0] == 0.0
    expected = (to_stored(probs, "uint8"), np.stack([to_labels(p, activation, 0.5) for p in probs]))
    for prefetch in (0, 1, 3):
        store = tmp_path / f"p{prefetch}.zarr"
        report = predict(
            path,
            model,
            store,
            tile=64,
            halo=0,
            batch=2,
            workers=0,
            prefetch=prefetch,
            progress=False,
        )
        probabilities, labels = _store(store)
        assert np.array_equal(probabilities, expected[0][0]), prefetch
        assert np.array_equal(labels, expected[1][0]), prefetch
        assert report.seconds["encode"] > 0.0  # the readers encoded, not the model thread


def test_an_onnx_run_on_the_cpu_never_imports_torch(tmp_path):
    import subprocess
    import sys

    model = _onnx_pointwise(tmp_path / "m.onnx", 1)
    path = write_geotiff(tmp_path / "in.tif", np.zeros((1, 64, 64), np.uint8))
    script = (
        "import sys; from pipeline.predict import predict; "
        f"predict({str(path)!r}, {str(model)!r}, {str(tmp_path / 'o.zarr')!r}, halo=0, "
        "workers=0, progress=False); print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=300
    )
    assert out.stdout.split()[-1] == "False"  # a second of start-up it does not need
