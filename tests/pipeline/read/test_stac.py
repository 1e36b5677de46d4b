"""STAC items shaped like real ones, served over HTTP: Sentinel-2 L2A and Landsat C2 style.

Sentinel-2: 10 m B02/B03/B04/B08 next to 20 m B8A/B11, hrefs relative to the item's own URL
(``../data/B04.tif``), ``proj:`` fields, band names in STAC 1.0 ``eo:bands`` or in STAC 1.1
``bands`` + ``eo:common_name``. Landsat: assets keyed by common name (``nir08``). The stack
equals a local file built by the stated rule (nearest on pixel centres, here 2x repeat), and a
tile reads what the whole image holds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine

from pipeline.errors import InputError
from pipeline.read import open_source
from pipeline.tile.grid import Window

SIZE = 96  # 10 m pixels; the 20 m assets have SIZE // 2
COMMON = {"B02": "blue", "B03": "green", "B04": "red", "B08": "nir", "B8A": "nir08",
          "B11": "swir16", "B05": "rededge071", "B06": "rededge075"}  # fmt: skip
COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"


def _cog(path: Path, pixels: np.ndarray, res: float) -> None:
    profile = {
        "driver": "COG", "width": pixels.shape[1], "height": pixels.shape[0], "count": 1,
        "dtype": "uint16", "crs": "EPSG:32633", "nodata": 0, "compress": "deflate",
        "transform": Affine(res, 0, 399960, 0, -res, 5000040), "blocksize": 32,
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as out:
        out.write(pixels, 1)


def _asset(key: str, res: int, form: str) -> dict[str, Any]:
    size = SIZE if res == 10 else SIZE // 2
    asset: dict[str, Any] = {
        "href": f"../data/{key}.tif",
        "type": COG_TYPE,
        "roles": ["data"],
        "gsd": res,
        "proj:shape": [size, size],
        "proj:transform": [res, 0, 399960, 0, -res, 5000040],
    }
    if form == "1.0":
        asset["eo:bands"] = [{"name": key, "common_name": COMMON[key]}]
    else:
        asset["bands"] = [{"name": key, "eo:common_name": COMMON[key]}]
    return asset


@pytest.fixture
def sentinel2(http_server) -> dict[str, Any]:
    """Sentinel-2-like assets under ``data/``, items under ``items/``; the expected pixels."""
    rng = np.random.default_rng(7)
    (http_server.root / "data").mkdir()
    (http_server.root / "items").mkdir()
    pixels = {}
    for key in COMMON:
        res = 10 if key in ("B02", "B03", "B04", "B08") else 20
        size = SIZE if res == 10 else SIZE // 2
        pixels[key] = rng.integers(1, 10000, (size, size), dtype=np.uint16)
        _cog(http_server.root / "data" / f"{key}.tif", pixels[key], res)
    for form in ("1.0", "1.1"):
        properties = {"datetime": "2026-01-01T00:00:00Z"}
        properties.update({"proj:epsg": 32633} if form == "1.0" else {"proj:code": "EPSG:32633"})
        assets = {k: _asset(k, 10 if k in ("B02", "B03", "B04", "B08") else 20, form)
                  for k in COMMON}  # fmt: skip
        assets["thumbnail"] = {"href": "../thumb.jpg", "type": "image/jpeg", "roles": ["overview"]}
        item = {"type": "Feature", "stac_version": form + ".0", "id": f"S2B_{form}",
                "geometry": None, "properties": properties, "assets": assets,
                "links": []}  # fmt: skip
        (http_server.root / "items" / f"s2-{form}.json").write_text(json.dumps(item))
    landsat = {
        key: {"href": f"../data/{band}.tif", "type": "image/vnd.stac.geotiff; cloud-optimized=true",
              "roles": ["data"], "eo:bands": [{"name": f"SR_{band}", "common_name": key}]}
        for key, band in {"red": "B04", "green": "B03", "blue": "B02", "nir08": "B08"}.items()
    }  # fmt: skip
    item = {"type": "Feature", "stac_version": "1.0.0", "id": "LC09", "geometry": None,
            "properties": {"datetime": "2026-01-01T00:00:00Z"}, "assets": landsat,
            "links": []}  # fmt: skip
    (http_server.root / "items" / "landsat.json").write_text(json.dumps(item))
    return pixels


def _on_fine_grid(pixels: np.ndarray) -> np.ndarray:
    """The stated rule for a 2x coarser asset: fine pixel (r, c) takes coarse (r // 2, c // 2)."""
    if pixels.shape[0] == SIZE:
        return pixels
    return np.repeat(np.repeat(pixels, 2, axis=0), 2, axis=1)


def _check_tiles(source: Any, whole: np.ndarray) -> None:
    for row in range(0, SIZE, 37):
        for col in range(0, SIZE, 29):
            window = Window(row, col, min(37, SIZE - row), min(29, SIZE - col))
            np.testing.assert_array_equal(
                source.read(window), whole[:, row : row + 37, col : col + 29]
            )


@pytest.mark.parametrize("form", ["1.0", "1.1"])
def test_sentinel2_item_over_http_stacks_10_and_20_m_bands(http_server, sentinel2, form):
    url = http_server.url(f"items/s2-{form}.json")
    names = ["red", "green", "blue", "nir", "nir08", "swir16"]
    source = open_source(url, assets=names)
    keys = ["B04", "B03", "B02", "B08", "B8A", "B11"]
    expected = np.stack([_on_fine_grid(sentinel2[key]) for key in keys])
    assert source.shape == (SIZE, SIZE) and source.count == 6
    assert source.georef.transform == Affine(10, 0, 399960, 0, -10, 5000040)
    whole = source.read(Window(0, 0, SIZE, SIZE))
    np.testing.assert_array_equal(whole, expected)
    _check_tiles(source, whole)
    info = source.describe()
    assert [a["key"] for a in info["assets"]] == keys
    assert info["assets"][0]["href"] == http_server.url("data/B04.tif")  # ../data from items/


def test_landsat_item_nir_is_its_nir08(http_server, sentinel2):
    url = http_server.url("items/landsat.json")
    source = open_source(url, assets=["red", "green", "blue", "nir"])
    assert [a["key"] for a in source.describe()["assets"]] == ["red", "green", "blue", "nir08"]
    whole = source.read(Window(0, 0, SIZE, SIZE))
    np.testing.assert_array_equal(whole[3], sentinel2["B08"])
    # Sentinel-2 has its own "nir" (B08): the exact name wins over the family
    s2 = open_source(http_server.url("items/s2-1.1.json"), assets=["nir"])
    assert s2.describe()["assets"][0]["key"] == "B08"


def test_unknown_or_ambiguous_names_are_one_line_listing_what_is_there(http_server, sentinel2):
    url = http_server.url("items/s2-1.0.json")
    with pytest.raises(InputError) as caught:
        open_source(url, assets=["red", "coastal"])
    message = str(caught.value)
    assert "\n" not in message and "'coastal'" in message
    assert "keys: B02, B03, B04, B08, B8A, B11, B05, B06, thumbnail" in message
    assert "common names: blue, green, nir, nir08, red, rededge071" in message
    with pytest.raises(InputError, match=r"several narrower ones: B05 \(rededge071\), B06"):
        open_source(url, assets=["rededge"])


def test_a_band_in_two_encodings_reads_the_geotiff(http_server, sentinel2):
    item = json.loads((http_server.root / "items" / "landsat.json").read_text())
    jp2 = {"href": "../data/missing.jp2", "type": "image/jp2", "roles": ["data"],
           "eo:bands": [{"name": "SR_B4", "common_name": "red"}]}  # fmt: skip
    item["assets"] = {"red-jp2": jp2, "the-red": item["assets"].pop("red"), **item["assets"]}
    (http_server.root / "items" / "two.json").write_text(json.dumps(item))
    source = open_source(http_server.url("items/two.json"), assets=["red"])
    assert source.describe()["assets"][0]["key"] == "the-red"
