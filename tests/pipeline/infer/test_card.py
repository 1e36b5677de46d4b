"""Model cards: validation with key paths, TODO placeholders, and where cards are found."""

import json

import numpy as np
import pytest
import torch
import yaml

from pipeline.errors import CheckpointError
from pipeline.infer import Predictor, describe_model
from pipeline.infer.card import card_beside, parse_card, read_card
from tests.pipeline.tinynet import TinyUNet, save_torchscript

CARD = {
    "name": "nuclei",
    "input": {
        "layout": "NHWC",
        "channels": 2,
        "bands": [2, 1],
        "normalisation": {"bit_depth": 8, "mean": [0.5, 0.5], "std": [0.25, 0.5]},
        "size": 96,
        "multiple": 4,
    },
    "halo": 28,
    "output": {"layout": "NHWC", "activation": "softmax"},
    "classes": [{"name": "background", "color": [0, 0, 0]}, {"name": "cell"}],
    "pixel_size": 0.5,
    "pixel_unit": "um",
}


def _with(**changes):
    data = json.loads(json.dumps(CARD))
    for path, value in changes.items():
        node = data
        *parents, last = path.split("__")
        for key in parents:
            node = node[key]
        if value is None:
            node.pop(last)
        else:
            node[last] = value
    return data


def test_a_valid_card_round_trips():
    card = parse_card(CARD)
    assert card.input.layout == "NHWC" and card.class_names == ("background", "cell")
    assert card.classes[0].color == (0, 0, 0) and card.classes[1].color is None
    assert parse_card(yaml.safe_load(card.to_yaml())) == card
    assert parse_card(json.loads(card.to_json())) == card


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"input__layout": "HWC"}, r"input\.layout: Input should be 'NCHW' or 'NHWC'"),
        ({"output__activation": None}, r"output\.activation: missing"),
        ({"halo": -4}, r"halo: .*>= 0 pixels or 'measure'"),
        ({"halo": "auto"}, r"halo"),
        ({"input__bands": [1]}, r"input: bands lists 1 band\(s\) but channels is 2"),
        ({"input__normalisation__std": None}, r"input\.normalisation: give both mean and std"),
        ({"input__size": 90}, r"input: size 90 is not a multiple of multiple 4"),
        ({"classes": [{"name": "x", "color": [0, 0, 300]}]}, r"classes\[0\]\.color"),
        ({"output__activation": "sigmoid"}, r"sigmoid means one output channel"),
        ({"input__colour": 1}, r"input\.colour: Extra inputs are not permitted"),
    ],
)
def test_bad_cards_name_the_key_path(changes, message):
    with pytest.raises(CheckpointError, match=message):
        parse_card(_with(**changes), source="m.card.yaml")


def test_todo_placeholders_are_listed_by_key_path():
    data = _with(halo="TODO: receptive-field radius", classes=["background", "TODO"])
    with pytest.raises(CheckpointError, match=r"TODO fields before use: halo, classes\[1\]"):
        parse_card(data)


def test_card_beside_the_file_wins_over_embedded_metadata(tmp_path):
    model = TinyUNet(in_channels=2, classes=2, seed=4)
    path = save_torchscript(model, tmp_path / "m.pt")
    assert card_beside(path) is None
    info, _ = describe_model(str(path))
    assert info.input_layout == "NCHW" and info.applied == "none" and info.card is None
    card = _with(input__layout="NCHW", output__layout="NCHW", output__activation="none")
    del card["input"]["size"]
    (tmp_path / "m.card.yaml").write_text(yaml.safe_dump(card))
    assert card_beside(path) == tmp_path / "m.card.yaml"
    info, network = describe_model(str(path))
    assert info.name == "nuclei" and info.bands == (2, 1) and info.halo == 28
    assert info.classes == ("background", "cell") and info.colors == ((0, 0, 0), None)
    assert (info.pixel_size, info.pixel_unit, info.fixed_size) == (0.5, "um", None)
    assert info.to_dict()["card"]["input"]["normalisation"]["bit_depth"] == 8
    # the card's normalisation is what the predictor applies: x/255, then (x - mean) / std
    raw = np.full((1, 2, 8, 8), 51, np.uint8)
    predictor = Predictor(network, info, device="cpu", precision="fp32")
    assert np.allclose(predictor.normalise(raw)[0, :, 0, 0], [(0.2 - 0.5) / 0.25, -0.6])
    with pytest.raises(CheckpointError, match=r"other\.card\.yaml"):
        describe_model(str(path), card=tmp_path / "other.card.yaml")


def test_read_card_reports_bad_yaml(tmp_path):
    bad = tmp_path / "m.card.yaml"
    bad.write_text("input: [unclosed\n")
    with pytest.raises(CheckpointError, match="not valid YAML/JSON"):
        read_card(bad)


def test_percentiles_are_fitted_once_per_source_and_recorded(tmp_path):
    from pipeline.infer import reference_predict
    from pipeline.predict import fit_percentiles, predict
    from pipeline.read.array import ArraySource
    from pipeline.stitch import read_attrs
    from pipeline.tile import InputSizes

    model = TinyUNet(in_channels=2, classes=1, seed=5)
    path = save_torchscript(model, tmp_path / "p.pt", metadata=False)
    image = np.random.default_rng(4).gamma(2.0, 300.0, (2, 90, 100)).astype(np.uint16)
    values = fit_percentiles(ArraySource(image), (2.0, 98.0))
    expected = np.percentile(image.reshape(2, -1), [2.0, 98.0], axis=1).T
    assert np.allclose(values, expected)
    card = _with(input__layout="NCHW", output__layout="NCHW", output__activation="none",
                 input__normalisation={"percentiles": [2, 98]}, input__bands=None,
                 halo=model.halo, classes=["cell"])  # fmt: skip
    del card["input"]["size"]
    store = tmp_path / "p.zarr"
    predict(image, path, store, card=card, tile=32, workers=0, progress=False,
            probabilities="float32", precision="fp32")  # fmt: skip
    attrs = read_attrs(store)
    assert np.allclose(attrs["model"]["percentile_values"], expected)
    scaled = (image - expected[:, :1, None]) / (expected[:, 1:, None] - expected[:, :1, None])

    def forward(batch):
        with torch.no_grad():
            logits = model(torch.from_numpy(batch.astype(np.float32))).numpy()
        return 1 / (1 + np.exp(-logits))

    reference = reference_predict(forward, scaled.astype(np.float32), halo=model.halo,
                                  sizes=InputSizes(4, 4))  # fmt: skip
    import zarr

    probs = np.asarray(zarr.open_group(str(store), mode="r")["probabilities"][...])
    assert np.abs(probs - reference).max() <= 1e-4
