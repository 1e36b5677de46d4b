"""``gigaseg model-card``: drafts from what a file reveals; once the TODOs are filled in, the
card runs the model exactly; gigaseg exports carry a complete card."""

import numpy as np
import pytest
import yaml

from pipeline.errors import CheckpointError
from pipeline.infer import reference_predict
from pipeline.infer.card import parse_card
from pipeline.predict import predict
from pipeline.stitch import read_attrs
from pipeline.tile import InputSizes
from tests.pipeline.infer.tfstyle import TFStyle, export_tfstyle
from workflows.cli import main

onnxruntime = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def tf_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tf")
    model = TFStyle(channels=1, classes=2, seed=7)
    return export_tfstyle(model, folder / "tf.onnx", 64), export_tfstyle(
        model, folder / "tf_dynamic.onnx", None
    )


def test_draft_of_a_foreign_onnx_model_then_filled_in_runs_exactly(tmp_path, tf_models, capsys):
    fixed, dynamic = tf_models
    out = tmp_path / "tf.card.yaml"
    assert main(["model-card", str(fixed), "--out", str(out)]) == 0
    assert "fill in" in capsys.readouterr().err
    text = out.read_text()
    assert "input_1 ['N', 64, 64, 1] tensor(float)" in text and "last operator Softmax" in text
    draft = yaml.safe_load(text)
    assert draft["input"]["layout"] == "NHWC" and draft["input"]["channels"] == 1
    assert draft["input"]["size"] == 64 and draft["output"]["layout"] == "NHWC"
    assert draft["output"]["activation"] == "softmax" and draft["halo"] == "measure"
    with pytest.raises(CheckpointError, match=r"TODO fields before use: input\.normalisation"):
        parse_card(draft)
    assert main(["model-card", str(fixed), "--out", str(out)]) == 1  # no silent overwrite
    # fill in what the file cannot know
    draft["input"]["normalisation"] = {"bit_depth": 8}
    draft["input"]["multiple"] = 4
    draft["classes"] = [{"name": "background"}, {"name": "cell", "color": [255, 0, 0]}]
    draft["pixel_size"], draft["pixel_unit"] = 0.5, "um"
    out.write_text(yaml.safe_dump(draft))
    image = np.random.default_rng(3).integers(0, 256, (1, 70, 90)).astype(np.uint8)
    store = tmp_path / "s.zarr"
    predict(
        image, fixed, store, tile=32, card=out, workers=0, progress=False,
        probabilities="float32", precision="fp32",
    )  # fmt: skip
    attrs = read_attrs(store)
    halo = attrs["halo"]
    assert halo % 4 == 0 and 20 <= halo <= 28 and attrs["model"]["card"]["halo"] == "measure"
    session = onnxruntime.InferenceSession(str(dynamic), providers=["CPUExecutionProvider"])

    def forward(batch):
        nhwc = np.ascontiguousarray((batch.astype(np.float32) / 255).transpose(0, 2, 3, 1))
        return session.run(None, {"input_1": nhwc})[0].transpose(0, 3, 1, 2)

    import zarr

    probs = np.asarray(zarr.open_group(str(store), mode="r")["probabilities"][...])
    reference = reference_predict(forward, image, halo=28, sizes=InputSizes(4, 4))
    assert np.abs(probs - reference).max() <= 1e-4


def test_gigaseg_export_carries_a_complete_card(tmp_path, capsys):
    unet = pytest.importorskip("unet")
    model = unet.UNet(in_channels=3, classes=2, base=4, depth=2)
    ckpt = tmp_path / "m.safetensors"
    unet.save(model, ckpt, classes=["background", "building"], bands=[3, 2, 1],
              mean=[1.0, 2.0, 3.0], std=[4.0, 5.0, 6.0], pixel_size=0.3)  # fmt: skip
    loaded, meta = unet.load(ckpt)
    unet.export(loaded, meta, tmp_path / "m.onnx", format="onnx")
    unet.export(loaded, meta, tmp_path / "m.pt", format="torchscript")
    for name in ("m.safetensors", "m.onnx", "m.pt"):
        assert main(["model-card", str(tmp_path / name)]) == 0
        text = capsys.readouterr().out
        assert "fill in" not in text, name
        card = parse_card(yaml.safe_load(text))
        assert card.halo == loaded.halo and card.input.multiple == loaded.alignment
        assert card.input.bands == [3, 2, 1] and card.input.normalisation.std == [4, 5, 6]
        assert card.output.activation == "none" and card.class_names == ("background", "building")
        assert card.pixel_size == 0.3


@pytest.mark.parametrize("how", ["trace", "script"])
def test_draft_of_a_torchscript_model_is_probed(tmp_path, how, capsys):
    import torch

    model = TFStyle(channels=1, classes=2, seed=7).eval()
    path = tmp_path / f"tf_{how}.pt"
    if how == "trace":
        torch.jit.trace(model, torch.zeros(1, 64, 64, 1)).save(str(path))
    else:
        torch.jit.script(model).save(str(path))
    assert main(["model-card", str(path)]) == 0
    text = capsys.readouterr().out
    assert "probe: input [1, 256, 256, 1] (NHWC) gives output [1, 256, 256, 2]" in text
    draft = yaml.safe_load(text)
    assert draft["input"]["layout"] == "NHWC" and draft["input"]["channels"] == 1
    assert draft["output"] == {"layout": "NHWC", "activation": "softmax"}
    assert len(draft["classes"]) == 2
    todos = next(line for line in text.splitlines() if line.startswith("# fill in"))
    assert "input.layout" not in todos and "output.activation" not in todos
    assert "input.normalisation.mean" in todos and "classes[0].name" in todos


def test_draft_of_a_half_precision_torchscript_model(tmp_path, capsys):
    import torch

    from tests.pipeline.tinynet import TinyUNet

    net = TinyUNet(in_channels=3, classes=2, depth=2, seed=1).eval().half()
    path = tmp_path / "half.pt"
    torch.jit.trace(net, torch.zeros(1, 3, 32, 32, dtype=torch.float16)).save(str(path))
    assert main(["model-card", str(path)]) == 0
    draft = yaml.safe_load(capsys.readouterr().out)
    assert draft["input"]["dtype"] == "float16" and draft["input"]["layout"] == "NCHW"
    assert draft["input"]["channels"] == 3 and len(draft["classes"]) == 2
