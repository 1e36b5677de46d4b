"""QGIS styles for vector exports: class colours as a categorized renderer on ``class``.

GeoPackage, FlatGeobuf and GeoParquet get a ``.qml`` beside the file, which QGIS loads as
the default style of the file with the same base name. (A GeoPackage could hold it in a
``layer_styles`` table, but GDAL then lists that table as a second layer, and readers that
open "the" layer of the file — geopandas, pyogrio — warn or pick the wrong one.)
The colours are :func:`~pipeline.export.features.class_color`'s (the model card's where it
gives them), the ones QuPath exports, COG colour tables and previews use.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path

from pipeline.export.atomic import commit, temporary_path
from pipeline.export.features import class_color

__all__ = ["qgis_style", "qml_path", "write_qml"]

_QGIS_VERSION = "3.28.0"


def _rgba(class_id: int, alpha: int, colors: Mapping[int, tuple[int, int, int]]) -> str:
    r, g, b = class_color(class_id, colors)
    return f"{r},{g},{b},{alpha}"


def _option(parent: ET.Element, name: str, value: str) -> None:
    ET.SubElement(parent, "Option", {"type": "QString", "name": name, "value": value})


def _symbol(
    parent: ET.Element,
    index: int,
    class_id: int,
    geometry: str,
    colors: Mapping[int, tuple[int, int, int]],
) -> None:
    kind = "line" if geometry == "line" else "fill"
    symbol = ET.SubElement(
        parent,
        "symbol",
        {"type": kind, "name": str(index), "alpha": "1", "clip_to_extent": "1", "force_rhr": "0"},
    )
    layer = ET.SubElement(
        symbol,
        "layer",
        {"class": "SimpleLine" if kind == "line" else "SimpleFill", "enabled": "1",
         "pass": "0", "locked": "0"},
    )  # fmt: skip
    options = ET.SubElement(layer, "Option", {"type": "Map"})
    if kind == "line":
        _option(options, "line_color", _rgba(class_id, 255, colors))
        _option(options, "line_width", "0.6")
        _option(options, "line_style", "solid")
    else:
        _option(options, "color", _rgba(class_id, 90, colors))
        _option(options, "outline_color", _rgba(class_id, 255, colors))
        _option(options, "outline_width", "0.4")
        _option(options, "outline_style", "solid")
        _option(options, "style", "solid")


def qgis_style(
    classes: Mapping[int, str],
    geometry: str = "polygon",
    field: str = "class",
    colors: Mapping[int, tuple[int, int, int]] | None = None,
) -> str:
    """Return a QGIS QML style that colours features by their ``field`` (the class name).

    ``colors`` are the model card's class colours (id -> RGB); other classes get
    :func:`~pipeline.export.features.class_color`'s.

    Examples
    --------
    >>> qml = qgis_style({1: "building"})
    >>> 'value="building"' in qml and 'value="230,159,0,255"' in qml
    True
    """
    root = ET.Element("qgis", {"version": _QGIS_VERSION, "styleCategories": "Symbology"})
    renderer = ET.SubElement(
        root,
        "renderer-v2",
        {"type": "categorizedSymbol", "attr": field, "symbollevels": "0",
         "enableorderby": "0", "forceraster": "0"},
    )  # fmt: skip
    categories = ET.SubElement(renderer, "categories")
    symbols = ET.SubElement(renderer, "symbols")
    for index, (class_id, name) in enumerate(sorted(classes.items())):
        ET.SubElement(
            categories,
            "category",
            {"render": "true", "symbol": str(index), "value": name, "label": name},
        )
        _symbol(symbols, index, class_id, geometry, colors or {})
    ET.SubElement(root, "layerGeometryType").text = "1" if geometry == "line" else "2"
    body = ET.tostring(root, encoding="unicode")
    return "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + body + "\n"


def qml_path(path: str | Path) -> Path:
    """Return the ``.qml`` QGIS looks for beside ``path`` (same base name)."""
    return Path(path).with_suffix(".qml")


def write_qml(path: str | Path, qml: str) -> Path:
    """Write ``qml`` beside ``path`` (temporary name, then rename); return the style's path."""
    target = qml_path(path)
    tmp = temporary_path(target)
    try:
        tmp.write_text(qml, encoding="utf-8")
        commit(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
