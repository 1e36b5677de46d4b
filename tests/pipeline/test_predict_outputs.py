"""A model with several outputs: the card's ``output.name`` picks one (by name or position),
the first image-shaped output is the default, and a non-image output fails on one line."""

import warnings

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from pipeline.errors import ModelRunError
from pipeline.infer import reference_predict
from pipeline.infer.draft import draft_card
from pipeline.predict import predict
from pipeline.stitch import read_attrs
from pipeline.tile import InputSizes
from tests.pipeline.tinynet import TinyUNet

onnxruntime = pytest.importorskip("onnxruntime")

HALO = 28  # TinyUNet depth 2 (alignment 4)


class AuxFirst(nn.Module):
    """A classification head first (N, K), the segmentation logits second (N, K, H, W)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = TinyUNet(in_channels=1, classes=2, depth=2, seed=4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seg = self.net(x)
        return seg.mean(dim=(2, 3)), seg


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("multi")
    model = AuxFirst().eval()
    onnx_path = folder / "multi.onnx"
    axes = {0: "N", 2: "H", 3: "W"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (torch.zeros(1, 1, 64, 64),), str(onnx_path), dynamo=False,
            input_names=["x"], output_names=["aux", "seg"], opset_version=17,
            dynamic_axes={"x": axes, "seg": axes, "aux": {0: "N"}},
        )  # fmt: skip
        script = folder / "multi.pt"
        torch.jit.trace(model, torch.zeros(1, 1, 64, 64)).save(str(script))
    return onnx_path, script, model


def _card(**output):
    return {
        "input": {"layout": "NCHW", "channels": 1, "multiple": 4},
        "halo": HALO,
        "output": {"layout": "NCHW", "activation": "none", **output},
        "classes": ["background", "cell"],
    }


def _image():
    return np.random.default_rng(1).standard_normal((1, 50, 60)).astype(np.float32)


def _reference(model):
    def forward(batch):
        with torch.no_grad():
            return torch.softmax(model(torch.from_numpy(batch))[1], dim=1).numpy()

    return reference_predict(forward, _image(), halo=HALO, sizes=InputSizes(4, 4))


@pytest.mark.parametrize(
    ("which", "output"), [("onnx", {}), ("onnx", {"name": "seg"}), ("onnx", {"name": 1}),
                          ("script", {}), ("script", {"name": 1})],
)  # fmt: skip
def test_the_image_output_is_taken(tmp_path, models, which, output):
    onnx_path, script, model = models
    store = tmp_path / "s.zarr"
    path = onnx_path if which == "onnx" else script
    predict(_image(), path, store, tile=40, card=_card(**output), workers=0, progress=False,
            probabilities="float32", precision="fp32")  # fmt: skip
    import zarr

    probs = np.asarray(zarr.open_group(str(store), mode="r")["probabilities"][...])
    assert np.abs(probs - _reference(model)).max() <= 1e-4


@pytest.mark.parametrize(
    ("which", "name", "message"),
    [("onnx", "aux", r"output of shape \[\d+, 2\], not an image"),
     ("onnx", "nope", r"no output 'nope' .* its outputs: 0: aux \(rank 2\), 1: seg \(rank 4\)"),
     ("script", 0, r"output of shape \[\d+, 2\], not an image"),
     ("script", 5, r"no position 5 .* 0: 0 \(rank 2\), 1: 1 \(rank 4\)")],
)  # fmt: skip
def test_a_wrong_output_fails_on_one_line(tmp_path, models, which, name, message):
    onnx_path, script, _ = models
    path = onnx_path if which == "onnx" else script
    store = tmp_path / "f.zarr"
    with pytest.raises(ModelRunError, match=message) as caught:
        predict(_image(), path, store, tile=40, card=_card(name=name), workers=0,
                progress=False)  # fmt: skip
    assert "\n" not in str(caught.value)
    if store.exists():
        assert read_attrs(store)["status"] == "failed"


def test_the_draft_names_the_image_output(models):
    onnx_path, _, _ = models
    card, notes = draft_card(onnx_path)
    assert card["output"]["name"] == "seg" and len(card["classes"]) == 2
    assert card["output"]["activation"] == "none"  # the last operator is a convolution
    assert any("output.name seg taken among 2 outputs (also: aux" in n for n in notes)
    written = yaml.safe_dump(card)
    assert "name: seg" in written


class Raises(nn.Module):
    """Raises inside forward for inputs wider than 50 px."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] > 50:
            raise RuntimeError("boom: this model takes at most 50 px")
        return torch.cat([x, -x], dim=1)


def test_an_error_inside_torchscript_forward_is_one_line_with_its_message(tmp_path, capsys):
    from tests.pipeline.read.synthetic import write_geotiff
    from workflows.cli import main

    path = tmp_path / "raises.pt"
    torch.jit.script(Raises()).save(str(path))
    source = write_geotiff(tmp_path / "in.tif", (_image() * 40 + 100).astype(np.uint8))
    card = tmp_path / "raises.card.yaml"
    card.write_text(yaml.safe_dump(_card()))
    store = tmp_path / "r.zarr"
    code = main(["predict", str(source), "--model", str(path), "--out", str(store), "--tile",
                 "40", "--workers", "0", "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert "model raises.pt (TorchScript) failed on input [1, 1, 96, " in err[0]
    assert "boom: this model takes at most 50 px" in err[0]
    assert read_attrs(store)["status"] == "failed"
