"""Bring your own model: a TensorFlow-style NHWC ONNX model with a softmax output and a fixed
input size runs exactly with its card; without one the error names what is missing; a model
the card misdescribes fails on one line and leaves the store ``failed``."""

import numpy as np
import pytest
import yaml

from pipeline.errors import ConfigError, InputError, ModelRunError
from pipeline.infer import reference_predict
from pipeline.predict import predict
from pipeline.stitch import read_attrs
from pipeline.tile import InputSizes
from tests.pipeline.infer.tfstyle import TFStyle, export_tfstyle
from tests.pipeline.read.synthetic import write_geotiff
from workflows.cli import main

onnxruntime = pytest.importorskip("onnxruntime")

SIZE, HALO = 96, 28  # TinyUNet depth 2: receptive field 26 -> halo 28 (alignment 4)
MEAN, STD = 100.0, 50.0


def _card(**changes):
    card = {
        "name": "tf-nuclei",
        "input": {
            "layout": "NHWC",
            "channels": 1,
            "normalisation": {"mean": [MEAN], "std": [STD]},
            "size": SIZE,
            "multiple": 4,
        },
        "halo": HALO,
        "output": {"layout": "NHWC", "activation": "softmax"},
        "classes": [
            {"name": "background", "color": [0, 0, 0]},
            {"name": "nucleus", "color": [220, 50, 47]},
            {"name": "stroma", "color": [38, 139, 210]},
        ],
        "pixel_size": 0.5,
        "pixel_unit": "um",
    }
    for key, value in changes.items():
        section, _, name = key.partition("__")
        if name:
            card[section][name] = value
        else:
            card[section] = value
    return card


@pytest.fixture(scope="module")
def tf_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tf")
    model = TFStyle(channels=1, classes=3)
    fixed = export_tfstyle(model, folder / "tf.onnx", SIZE)
    dynamic = export_tfstyle(model, folder / "tf_dynamic.onnx", None)
    return fixed, dynamic


def _image(height=130, width=150, seed=5):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (1, height, width)).astype(np.uint8)


def _onnx_reference(dynamic, image):
    """onnxruntime on the mirror-padded whole image, normalised and transposed by hand."""
    session = onnxruntime.InferenceSession(str(dynamic), providers=["CPUExecutionProvider"])

    def forward(batch):
        nhwc = ((batch.astype(np.float32) - MEAN) / STD).transpose(0, 2, 3, 1)
        return session.run(None, {"input_1": np.ascontiguousarray(nhwc)})[0].transpose(0, 3, 1, 2)

    return reference_predict(forward, image, halo=HALO, sizes=InputSizes(4, 4))


@pytest.mark.parametrize("tile", [64, 40])
def test_nhwc_softmax_fixed_size_model_equals_onnxruntime_on_the_whole_image(
    tmp_path, tf_models, tile
):
    fixed, dynamic = tf_models
    card_path = tmp_path / "tf.card.yaml"
    card_path.write_text(yaml.safe_dump(_card()))
    image = _image()
    store = tmp_path / "s.zarr"
    report = predict(
        image, fixed, store, tile=tile, card=card_path, workers=0, progress=False,
        probabilities="float32", precision="fp32",
    )  # fmt: skip
    import zarr

    probs = np.asarray(zarr.open_group(str(store), mode="r")["probabilities"][...])
    reference = _onnx_reference(dynamic, image)
    assert report.status == "complete" and probs.shape == (3, 130, 150)
    assert np.abs(probs - reference).max() <= 1e-4
    # softmax applied once: channels sum to 1 and keep their spread (twice squashes them)
    assert np.allclose(probs.sum(axis=0), 1.0, atol=1e-5)
    assert probs.max() > 0.9 and probs.min() < 0.05
    attrs = read_attrs(store)
    assert attrs["patch"] == 40 and attrs["halo"] == HALO  # 40 + 2 * 28 = 96, the fixed size
    assert attrs["classes"] == ["background", "nucleus", "stroma"]
    assert attrs["class_colors"][1] == [220, 50, 47]
    assert attrs["model"]["card"]["output"]["activation"] == "softmax"


def test_card_beside_the_model_is_found(tmp_path, tf_models):
    fixed, _ = tf_models
    model = tmp_path / "beside.onnx"
    model.write_bytes(fixed.read_bytes())
    (tmp_path / "beside.card.yaml").write_text(yaml.safe_dump(_card()))
    report = predict(_image(50, 60), model, tmp_path / "b.zarr", tile=40, workers=0,
                     progress=False, precision="fp32")  # fmt: skip
    assert report.status == "complete"


def test_without_a_card_the_error_names_the_missing_fields(tmp_path, tf_models):
    fixed, _ = tf_models
    with pytest.raises(
        ConfigError, match=r"no model card .* unknown: halo, input\.layout, output\.activation"
    ):
        predict(_image(50, 60), fixed, tmp_path / "n.zarr", tile=40, workers=0, progress=False)
    assert not (tmp_path / "n.zarr").exists()
    # a halo alone does not make an NHWC model runnable: the error points to the card
    with pytest.raises(InputError, match=r"cannot run on 1 band\(s\) .* give it a model card"):
        predict(_image(50, 60), fixed, tmp_path / "n.zarr", tile=64, halo=28, workers=0,
                progress=False)  # fmt: skip
    assert not (tmp_path / "n.zarr").exists()


def test_runtime_mismatch_is_one_line_and_the_store_is_failed(tmp_path, tf_models, capsys):
    fixed, _ = tf_models
    card = tmp_path / "wrong.card.yaml"  # says 64 px input, the model takes 96
    card.write_text(yaml.safe_dump(_card(input__size=64, halo=12)))
    store = tmp_path / "f.zarr"
    with pytest.raises(ModelRunError, match=r"model tf\.onnx \(onnxruntime\) failed on input"):
        predict(_image(50, 60), fixed, store, tile=40, card=card, workers=0, progress=False)
    attrs = read_attrs(store)
    assert attrs["status"] == "failed" and "expects input_1 ['N', 96, 96, 1]" in attrs["error"]
    # the command line: one line on stderr, exit 1, no traceback, the store failed
    source = write_geotiff(tmp_path / "in.tif", _image(50, 60))
    argv = ["predict", str(source), "--model", str(fixed), "--card", str(card), "--out"]
    capsys.readouterr()
    code = main([*argv, str(store), "--tile", "40", "--workers", "0", "--no-progress",
                 "--overwrite"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "got [1, 96, 96, 1]" not in lines[0]
    assert lines[0].startswith("gigaseg predict: error: model tf.onnx (onnxruntime) failed")
    assert "[1, 64, 64, 1]" in lines[0] and "['N', 96, 96, 1]" in lines[0]
    assert read_attrs(store)["status"] == "failed"


def test_a_card_with_the_wrong_class_count_fails_on_one_line(tmp_path, tf_models):
    fixed, _ = tf_models
    card = _card(classes=[{"name": "background"}, {"name": "nucleus"}])  # the model has 3
    store = tmp_path / "c.zarr"
    with pytest.raises(ModelRunError, match=r"output 3 channel\(s\) .* but 2 class\(es\)"):
        predict(_image(50, 60), fixed, store, tile=40, card=card, workers=0, progress=False)
    assert read_attrs(store)["status"] == "failed"


def test_nodata_is_filled_with_the_card_mean_in_raw_units(tmp_path, tf_models):
    """A card's mean is in the units after bit_depth: nodata becomes 0.4 * 255 raw, i.e. 0
    after normalisation, and the pixels next to it equal the model on that filled image."""
    fixed, dynamic = tf_models
    card = _card(input__normalisation={"bit_depth": 8, "mean": [0.4], "std": [0.2]})
    image = _image(70, 90, seed=8)
    image[image == 0] = 1
    image[:, 20:40, 30:45] = 0  # nodata inside the scene
    source = write_geotiff(tmp_path / "nodata.tif", image, nodata=0)
    store = tmp_path / "nd.zarr"
    predict(source, fixed, store, tile=40, card=card, workers=0, progress=False,
            probabilities="float32", precision="fp32")  # fmt: skip
    import zarr

    probs = np.asarray(zarr.open_group(str(store), mode="r")["probabilities"][...])
    session = onnxruntime.InferenceSession(str(dynamic), providers=["CPUExecutionProvider"])

    def forward(batch):
        nhwc = ((batch.astype(np.float32) / 255 - 0.4) / 0.2).transpose(0, 2, 3, 1)
        return session.run(None, {"input_1": np.ascontiguousarray(nhwc)})[0].transpose(0, 3, 1, 2)

    filled = image.astype(np.float32)
    filled[:, 20:40, 30:45] = 0.4 * 255
    reference = reference_predict(forward, filled, halo=HALO, sizes=InputSizes(4, 4))
    valid = np.isfinite(probs).all(axis=0)
    assert not valid[20:40, 30:45].any() and valid.sum() == 70 * 90 - 20 * 15
    assert np.abs(probs - reference)[:, valid].max() <= 1e-4


def test_halo_measure_is_skipped_when_a_halo_is_given(tmp_path, tf_models, caplog):
    fixed, _ = tf_models
    card = _card(halo="measure")
    with caplog.at_level("WARNING", logger="gigaseg"):
        report = predict(_image(50, 60), fixed, tmp_path / "h.zarr", tile=40, halo=HALO,
                         card=card, workers=0, progress=False)  # fmt: skip
    assert report.status == "complete" and read_attrs(tmp_path / "h.zarr")["halo"] == HALO
    assert "measured by perturbation" not in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="gigaseg"):
        predict(_image(50, 60), fixed, tmp_path / "m.zarr", tile=40, card=card, workers=0,
                progress=False)  # fmt: skip
    assert "measured by perturbation" in caplog.text
