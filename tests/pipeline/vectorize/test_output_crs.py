"""``--crs``: GeoPackage, FlatGeobuf and GeoParquet in a CRS of the user's choice.

The same label raster is vectorized in its own CRS (UTM) and in EPSG:3857; the second must
be the first reprojected vertex by vertex. GeoJSON (RFC 7946: EPSG:4326) and QuPath
(pixels) refuse ``--crs`` with one clear line.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pyogrio
import pytest
import shapely
from pyproj import CRS, Transformer

from pipeline.errors import ConfigError
from pipeline.vectorize import vectorize

from .helpers import blobs, write_geotiff


@pytest.fixture(scope="module")
def labels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("crs")
    raster = blobs((64, 48), seed=4)
    assert raster.any()
    return write_geotiff(folder / "labels.tif", raster, tags={"classes": '["building"]'})


def _read(path: Path) -> tuple[CRS, list[shapely.Geometry]]:
    info = pyogrio.read_info(path)
    _, _, geometry, _ = pyogrio.raw.read(path)
    return CRS.from_user_input(info["crs"]), list(shapely.from_wkb(geometry))


@pytest.mark.parametrize("ext", ["gpkg", "fgb"])
def test_ogr_formats_are_written_in_the_chosen_crs(labels: Path, tmp_path: Path, ext: str) -> None:
    native = tmp_path / f"native.{ext}"
    mercator = tmp_path / f"mercator.{ext}"
    vectorize(labels, native, workers=0, progress=False)
    vectorize(labels, mercator, workers=0, progress=False, crs="EPSG:3857")
    crs_native, geoms_native = _read(native)
    crs_merc, geoms_merc = _read(mercator)
    assert crs_native.to_epsg() == 32616 and crs_merc.to_epsg() == 3857
    assert len(geoms_merc) == len(geoms_native) > 0
    to_merc = Transformer.from_crs(32616, 3857, always_xy=True)
    for a, b in zip(geoms_native, geoms_merc, strict=True):
        expected = shapely.transform(a, lambda xy: np.column_stack(to_merc.transform(*xy.T)))
        assert shapely.equals_exact(expected, b, tolerance=1e-6)


def test_geoparquet_records_the_chosen_crs(labels: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.parquet"
    vectorize(labels, out, workers=0, progress=False, crs="EPSG:3857")
    geo = json.loads(pq.read_schema(out).metadata[b"geo"])
    column = geo["columns"][geo["primary_column"]]
    assert CRS.from_user_input(json.dumps(column["crs"])).to_epsg() == 3857
    bounds = shapely.bounds(shapely.from_wkb(pq.read_table(out)["geometry"].to_pylist()))
    assert bounds[:, 0].min() < -9e6  # metres west of Greenwich (EPSG:3857), not UTM eastings


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("x.geojson", r"--crs does not apply to geojson: it is always EPSG:4326 by RFC 7946"),
        ("x.qupath.geojson", r"--crs does not apply to qupath: it is always in level-0 pixels"),
        ("x.gpkg", r"--crs 'EPSG:99999999' is not a CRS pyproj knows"),
    ],
)
def test_refused_with_one_clear_line(labels: Path, tmp_path: Path, out: str, message: str) -> None:
    crs = "EPSG:99999999" if out == "x.gpkg" else "EPSG:3857"
    with pytest.raises(ConfigError, match=message):
        vectorize(labels, tmp_path / out, workers=0, progress=False, crs=crs)
    assert list(tmp_path.iterdir()) == []


def test_refused_without_a_source_crs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs a georeferenced input; the input has no CRS"):
        vectorize(blobs((16, 16), seed=1), tmp_path / "x.gpkg", workers=0, crs="EPSG:3857")
