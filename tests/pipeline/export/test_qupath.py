"""QuPath measurements on a real slide run: the bundled Aperio slide, a tiny model with a card
giving class colours, predict -> vectorize --format qupath."""

import json
from pathlib import Path

import numpy as np
import pytest
import shapely
import torch
import yaml

from pipeline.export.qupath import measurements
from pipeline.predict import predict
from pipeline.vectorize import vectorize

SVS = Path(__file__).parents[2] / "data" / "wsi" / "CMU-1-Small-Region.svs"
MPP = 0.499  # µm per level-0 pixel of the slide
COLOR = [220, 50, 47]


class DarkStain(torch.nn.Module):
    """Logit of "darker than glass", smoothed over 5 x 5 pixels (receptive radius 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 1, 5, padding=2)
        with torch.no_grad():
            self.conv.weight.fill_(-1.0 / 75)
            self.conv.bias.fill_(0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * 20.0


def test_measurements_by_hand():
    square, disc = shapely.box(0, 0, 4, 4), shapely.Point(0, 0).buffer(10, 256)
    got = measurements(np.array([square, disc]), None)
    assert got["Area px^2"].tolist() == pytest.approx([16.0, np.pi * 100], rel=1e-3)
    assert got["Perimeter px"][0] == 16.0
    assert got["Circularity"].tolist() == pytest.approx([np.pi / 4, 1.0], rel=1e-3)


def test_qupath_export_of_a_slide_run_has_measurements_and_card_colours(tmp_path):
    openslide = pytest.importorskip("openslide")
    assert openslide.OpenSlide(str(SVS)).properties["openslide.mpp-x"].startswith("0.499")
    model = tmp_path / "dark.pt"
    torch.jit.save(torch.jit.script(DarkStain().eval()), str(model))
    card = {  # pixels darker than 0.75 of white are "tissue"
        "input": {"layout": "NCHW", "channels": 3, "multiple": 4,
                  "normalisation": {"bit_depth": 8, "mean": [0.75] * 3, "std": [1.0] * 3}},
        "halo": 4,
        "output": {"layout": "NCHW", "activation": "none"},
        "classes": [{"name": "tissue", "color": COLOR}],
        "pixel_size": MPP * 4,
        "pixel_unit": "um",
    }  # fmt: skip
    (tmp_path / "dark.card.yaml").write_text(yaml.safe_dump(card))
    store = tmp_path / "slide.zarr"
    predict(SVS, model, store, mpp=MPP * 4, tile=256, workers=0, progress=False,
            precision="fp32")  # fmt: skip
    out = tmp_path / "cells.qupath.geojson"
    vectorize(store, out, min_area=20.0, workers=0, progress=False)
    features = json.loads(out.read_text())["features"]
    assert len(features) >= 3
    for feature in features:
        props = feature["properties"]
        assert props["classification"] == {"name": "tissue", "color": COLOR}
        geom = shapely.geometry.shape(feature["geometry"])  # level-0 pixels
        m = props["measurements"]
        assert m["Area µm^2"] == pytest.approx(geom.area * MPP**2, rel=1e-9)
        assert m["Perimeter µm"] == pytest.approx(geom.length * MPP, rel=1e-9)
        circularity = 4 * np.pi * geom.area / geom.length**2
        assert m["Circularity"] == pytest.approx(min(circularity, 1.0), rel=1e-9)
        assert 0.5 <= m["Mean probability"] <= 1.0  # pixels above the 0.5 threshold
        assert "area_um2" not in m and "mean_probability" not in m


@pytest.mark.parametrize("level", [1, 2])
def test_a_feature_at_a_known_place_lands_there_in_level0_pixels(tmp_path, level):
    # a dark rectangle at x 400..700, y 300..500 of level 0 on a pyramid with fractional,
    # per-axis downsamples (1001 x 1203: level 2 is 4.004 x 4.01), run at level 1 or 2
    from tests.pipeline.read.slides import write_svs

    image = np.full((1001, 1203, 3), 240, np.uint8)
    image[300:500, 400:700] = 60
    slide = write_svs(tmp_path / "box.svs", image, levels=3, tile=128, mpp=0.25)
    model = tmp_path / "dark.pt"
    torch.jit.save(torch.jit.script(DarkStain().eval()), str(model))
    card = {
        "input": {"layout": "NCHW", "channels": 3, "multiple": 4,
                  "normalisation": {"bit_depth": 8, "mean": [0.75] * 3, "std": [1.0] * 3}},
        "halo": 4, "output": {"layout": "NCHW", "activation": "none"},
        "classes": [{"name": "box", "color": COLOR}],
    }  # fmt: skip
    (tmp_path / "dark.card.yaml").write_text(yaml.safe_dump(card))
    store = tmp_path / "box.zarr"
    predict(slide, model, store, level=level, tile=96, workers=0, progress=False)
    out = tmp_path / "box.qupath.geojson"
    vectorize(store, out, workers=0, progress=False)
    (feature,) = json.loads(out.read_text())["features"]
    box = shapely.geometry.shape(feature["geometry"])
    reach = 1.5 * 2.0**level  # the level's blurred edge: a level pixel and a half
    assert np.allclose(box.bounds, (400, 300, 700, 500), atol=reach), box.bounds
    m = feature["properties"]["measurements"]
    assert m["Area µm^2"] == pytest.approx(box.area * 0.25**2, rel=1e-9)  # µm from level 0
    assert m["Perimeter µm"] == pytest.approx(box.length * 0.25, rel=1e-9)
    low, high = (300 - 2 * reach) * (200 - 2 * reach), (300 + 2 * reach) * (200 + 2 * reach)
    assert low * 0.25**2 <= m["Area µm^2"] <= high * 0.25**2
    assert m["Circularity"] == pytest.approx(4 * np.pi * 300 * 200 / 1000**2, rel=0.05)
