"""Real SpaceNet footprints: rasterize, vectorize across many chunk seams, match back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import rasterio
import shapely
from pyproj import Transformer
from rasterio.features import rasterize

from pipeline.vectorize import iou, vectorize

from .helpers import write_geotiff

DATA = Path(__file__).resolve().parents[2] / "data" / "spacenet"


def test_all_43_footprints_come_back_with_iou_at_least_half(tmp_path: Path) -> None:
    footprints = [
        shapely.geometry.shape(f["geometry"])
        for f in json.loads((DATA / "geotiff_labels.geojson").read_text())["features"]
    ]
    assert len(footprints) == 43
    with rasterio.open(DATA / "sample_geotiff.tif") as ds:
        transform, crs, shape = ds.transform, ds.crs, ds.shape
    labels = rasterize(footprints, out_shape=shape, transform=transform, dtype="uint8")
    tif = write_geotiff(tmp_path / "labels.tif", labels, crs=crs.to_wkt(), transform=transform)
    chunk = 64

    def xy(col: float, row: float) -> tuple[float, float]:
        return transform.c + col * transform.a, transform.f + row * transform.e

    seams = shapely.union_all(
        [shapely.LineString([xy(c, 0), xy(c, shape[0])]) for c in range(chunk, shape[1], chunk)]
        + [shapely.LineString([xy(0, r), xy(shape[1], r)]) for r in range(chunk, shape[0], chunk)]
    )
    cut = sum(f.intersects(seams) for f in footprints)
    assert cut >= 15  # the chunk grid cuts many of them
    out = tmp_path / "buildings.geojson"
    report = vectorize(tif, out, chunk=chunk, workers=0, progress=False)
    assert report.border_pieces > cut
    to_utm = Transformer.from_crs("EPSG:4326", crs.to_wkt(), always_xy=True)
    traced = []
    for f in json.loads(out.read_text())["features"]:
        geom = shapely.geometry.shape(f["geometry"])
        assert geom.is_valid
        traced.append(
            shapely.transform(
                geom, lambda xy: np.column_stack(to_utm.transform(xy[:, 0], xy[:, 1]))
            )
        )
    best = [max(iou(fp, t) for t in traced) for fp in footprints]
    assert min(best) >= 0.5, sorted(best)[:5]
