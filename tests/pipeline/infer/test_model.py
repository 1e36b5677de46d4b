import json

import numpy as np
import pytest
import torch

from pipeline.errors import CheckpointError
from pipeline.infer import (
    LOAD_COUNTS,
    Predictor,
    activate,
    cached_model,
    describe_model,
    predict_tile,
    reference_predict,
    resolve_precision,
    with_overrides,
)
from pipeline.infer import predictor as predictor_module
from pipeline.tile import InputSizes, TileGrid
from tests.pipeline.tinynet import TinyUNet, save_torchscript


@pytest.fixture(scope="module")
def scripted(tmp_path_factory):
    return save_torchscript(TinyUNet(seed=1), tmp_path_factory.mktemp("m") / "tiny.pt")


def test_torchscript_metadata_is_read(scripted):
    info, _ = describe_model(str(scripted))
    net = TinyUNet(seed=1)
    assert (info.kind, info.halo, info.alignment, info.padding) == (
        "torchscript",
        net.halo,
        4,
        "same",
    )
    assert info.outputs == 1
    assert info.activation == "sigmoid"
    assert len(info.sha256) == 64


def test_foreign_model_without_metadata(tmp_path):
    path = save_torchscript(TinyUNet(), tmp_path / "foreign.pt", metadata=False)
    info, _ = describe_model(str(path))
    assert info.halo is None and info.outputs is None
    assert with_overrides(info, halo=40, classes=("a", "b")).halo == 40


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_onnx_without_metadata(tmp_path):
    model = TinyUNet().eval()
    path = tmp_path / "foreign.onnx"
    axes = {0: "n", 2: "h", 3: "w"}
    torch.onnx.export(
        model,
        (torch.zeros(1, 3, 32, 32),),
        str(path),
        dynamo=False,
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": axes, "y": axes},
    )
    info, session = describe_model(str(path))
    assert info.kind == "onnx" and info.in_channels == 3 and info.halo is None
    info = with_overrides(info, halo=model.halo, classes=("x",))
    out = Predictor(session, info)(np.zeros((1, 3, 64, 64), np.uint8))
    assert out.shape == (1, 1, 64, 64)
    # its threads sleep between calls instead of spinning on the readers' cores
    options = session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0"


def test_bad_model_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        describe_model(str(tmp_path / "none.pt"))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="not a loadable TorchScript"):
        describe_model(str(bad))
    other = tmp_path / "m.h5"
    other.write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unknown model format"):
        describe_model(str(other))


def test_cached_model_loads_once(scripted):
    info, _ = describe_model(str(scripted))
    before = LOAD_COUNTS.get(str(scripted), 0)
    first = cached_model(info)
    second = cached_model(info)
    assert first is second
    assert LOAD_COUNTS[str(scripted)] == before + 1


def test_normalisation_and_activation(tmp_path):
    model = TinyUNet(classes=3)
    path = save_torchscript(model, tmp_path / "m.pt", mean=[10.0, 20.0, 30.0], std=[2.0, 4.0, 8.0])
    info, net = describe_model(str(path))
    raw = np.random.default_rng(0).integers(0, 255, (1, 3, 32, 32)).astype(np.uint8)
    probs = Predictor(net, info, precision="fp32")(raw)
    x = (raw.astype(np.float32) - np.array([10, 20, 30], np.float32)[:, None, None]) / np.array(
        [2, 4, 8], np.float32
    )[:, None, None]
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(x)), 1).numpy()
    assert np.abs(probs - expected).max() < 1e-5
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5)


def test_activate():
    logits = np.array([[[[0.0]], [[np.log(3.0)]]]], np.float32)
    assert np.allclose(activate(logits, "softmax")[0, :, 0, 0], [0.25, 0.75])
    assert np.allclose(activate(logits[:, :1], "sigmoid"), 0.5)


def test_precision_auto(monkeypatch):
    monkeypatch.setattr(predictor_module, "cpu_supports_bf16", lambda: True)
    assert resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(predictor_module, "cpu_supports_bf16", lambda: False)
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("fp16", "cpu") == "fp16"


def test_bf16_is_close(scripted):
    info, net = describe_model(str(scripted))
    raw = np.random.default_rng(0).integers(0, 255, (1, 3, 64, 64)).astype(np.uint8)
    fp32 = Predictor(net, info, precision="fp32")(raw)
    bf16 = Predictor(net, info, precision="bf16")(raw)
    assert np.abs(fp32 - bf16).max() < 0.05


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("patch", [16, 32, 48])
def test_patches_inside_a_tile_are_exact(tmp_path, padding, patch):
    model = TinyUNet(padding=padding, seed=3)
    info, net = describe_model(str(save_torchscript(model, tmp_path / "m.pt")))
    forward = Predictor(net, info, precision="fp32")
    image = np.random.default_rng(1).integers(0, 255, (3, 70, 90)).astype(np.uint8)
    reference = reference_predict(
        forward, image, halo=info.halo, sizes=info.sizes, padding=info.padding
    )
    grid = TileGrid(70, 90, 48, info.halo, info.alignment, info.sizes, info.padding)
    from pipeline.read import ArraySource

    source = ArraySource(image)
    for row, col in grid.indices():
        plan = grid.plan(row, col, patch)
        probs = predict_tile(forward, source.read(plan.read), plan, batch=2, outputs=1)
        assert (
            np.abs(
                probs
                - reference[
                    :,
                    plan.core.row_off : plan.core.row_stop,
                    plan.core.col_off : plan.core.col_stop,
                ]
            ).max()
            < 1e-4
        )


def test_reference_sizes():
    calls = []

    def forward(batch):
        calls.append(batch.shape)
        return np.zeros((1, 2, *batch.shape[2:]), np.float32)

    out = reference_predict(forward, np.zeros((3, 37, 53)), halo=112, sizes=InputSizes(16, 16))
    assert out.shape == (2, 37, 53)
    assert calls == [(1, 3, 272, 288)]
    assert json.dumps(calls)
