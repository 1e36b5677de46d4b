"""QGIS styles travel with vector exports: a ``.qml`` with the class colours beside the file."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import shapely

from pipeline.export import FeatureBatch, Field, Schema, class_color, open_writer, qml_path

CLASSES = {1: "building", 2: "road"}
FIELDS = (Field("id", "int"), Field("class", "str"))


def _batch() -> FeatureBatch:
    geoms = np.array([shapely.box(0, 0, 1, 1), shapely.box(2, 2, 3, 3)], dtype=object)
    return FeatureBatch(
        geoms, {"id": np.array([1, 2]), "class": np.array(["building", "road"], dtype=object)}
    )


def _categories(qml: str) -> dict[str, str]:
    root = ET.fromstring(qml.split("\n", 1)[1])
    renderer = root.find("renderer-v2")
    assert renderer is not None and renderer.get("attr") == "class"
    symbols = {s.get("name"): s for s in renderer.iter("symbol")}
    out = {}
    for category in renderer.iter("category"):
        symbol = symbols[category.get("symbol")]
        colour = next(o for o in symbol.iter("Option") if o.get("name") == "outline_color")
        out[str(category.get("value"))] = str(colour.get("value"))
    return out


def _expected() -> dict[str, str]:
    return {name: ",".join(map(str, (*class_color(i), 255))) for i, name in CLASSES.items()}


@pytest.mark.parametrize(
    ("fmt", "ext"), [("gpkg", "gpkg"), ("flatgeobuf", "fgb"), ("geoparquet", "parquet")]
)
def test_qml_beside_the_file(tmp_path: Path, fmt: str, ext: str) -> None:
    out = tmp_path / f"scene.{ext}"
    with open_writer(out, fmt, Schema(FIELDS, "EPSG:32616", classes=CLASSES)) as writer:
        writer.write(_batch())
    assert qml_path(out) == tmp_path / "scene.qml"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, "scene.qml"])
    assert _categories(qml_path(out).read_text()) == _expected()
    if fmt != "geoparquet":
        assert pyogrio.list_layers(out).shape[0] == 1  # the file itself holds one layer


def test_line_layers_get_line_symbols(tmp_path: Path) -> None:
    from pipeline.export import qgis_style

    root = ET.fromstring(qgis_style({1: "road"}, "line").split("\n", 1)[1])
    assert {s.get("type") for s in root.iter("symbol")} == {"line"}


def test_qml_takes_the_model_card_colours(tmp_path: Path) -> None:
    """The card's colour for a class is the one QGIS shows, as QuPath does; others keep theirs."""
    out = tmp_path / "scene.gpkg"
    card = {1: (220, 50, 47)}
    schema = Schema(FIELDS, "EPSG:32616", classes=CLASSES, colors=card)
    with open_writer(out, "gpkg", schema) as writer:
        writer.write(_batch())
    assert _categories(qml_path(out).read_text()) == {
        "building": "220,50,47,255",
        "road": ",".join(map(str, (*class_color(2), 255))),
    }
