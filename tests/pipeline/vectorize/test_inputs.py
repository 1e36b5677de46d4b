"""Inputs: gigaseg stores, Zarr arrays, probability rasters, and one-line errors for bad ones."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import shapely
import zarr

from pipeline.errors import ConfigError, InputError, OutputExistsError
from pipeline.vectorize import open_labels, vectorize

from .helpers import assert_same, blobs, read_parquet, write_geotiff

GDAL_UTM = [733601.0, 0.5, 0.0, 3725139.0, 0.0, -0.5]


def make_store(
    path: Path,
    labels: np.ndarray,
    probs: np.ndarray,
    *,
    classes: list[str],
    status: str = "complete",
    chunk: int = 16,
    **attrs: object,
) -> Path:
    """A store laid out as DESIGN.md says, built directly (no dependency on predict)."""
    group = zarr.open_group(str(path), mode="w")
    lab = group.create_array("labels", shape=labels.shape, chunks=(chunk, chunk), dtype="uint8")
    lab[:] = labels
    pr = group.create_array(
        "probabilities", shape=probs.shape, chunks=(probs.shape[0], chunk, chunk), dtype=probs.dtype
    )
    pr[:] = probs
    group.attrs.update(
        {"classes": classes, "status": status, "crs": "EPSG:32616", "transform": GDAL_UTM, **attrs}
    )
    return path


def test_store_softmax_mean_probability_and_class_names(tmp_path: Path) -> None:
    labels = blobs((48, 40), seed=2, classes=2)
    rng = np.random.default_rng(0)
    probs = rng.integers(0, 256, (3, *labels.shape), dtype=np.uint8)
    store = make_store(
        tmp_path / "s.zarr", labels, probs, classes=["background", "building", "road"]
    )
    out = tmp_path / "out.parquet"
    report = vectorize(store, out, chunk=16, workers=0, progress=False)
    got = read_parquet(out)
    geoms = {
        k: (
            c,
            shapely.transform(
                g,
                lambda xy: np.column_stack(
                    [(xy[:, 0] - 733601.0) / 0.5, (xy[:, 1] - 3725139.0) / -0.5]
                ),
            ),
            r,
        )
        for k, (c, g, r) in got.items()
    }
    assert_same(labels, geoms, 4)
    assert report.per_class == {
        "building": sum(c == 1 for c, *_ in got.values()),
        "road": sum(c == 2 for c, *_ in got.values()),
    }
    from rasterio.features import rasterize

    for cid, geom, row in geoms.values():
        mask = rasterize([geom], out_shape=labels.shape, dtype="uint8").astype(bool)
        expected = probs[cid][mask].astype(float).mean() / 255
        assert row["mean_probability"] == pytest.approx(expected, rel=1e-6)
        assert row["class"] == {1: "building", 2: "road"}[cid]
    meta = pq.read_schema(out).metadata[b"geo"]
    assert b"32616" in meta


def test_store_sigmoid_class_selection_by_name_and_id(tmp_path: Path) -> None:
    labels = blobs((32, 32), seed=4)
    probs = (labels[None] * 200).astype(np.uint8)
    store = make_store(tmp_path / "s.zarr", labels, probs, classes=["building"])
    a = vectorize(store, tmp_path / "a.geojson", classes=["building"], workers=0, progress=False)
    b = vectorize(store, tmp_path / "b.geojson", classes=["1"], workers=0, progress=False)
    assert a.features == b.features > 0
    assert a.per_class == {"building": a.features}


def test_zarr_array_and_probability_geotiff_with_threshold(tmp_path: Path) -> None:
    labels = blobs((40, 36), seed=9)
    arr = zarr.create_array(
        str(tmp_path / "a.zarr"), shape=labels.shape, chunks=(8, 8), dtype="uint8"
    )
    arr[:] = labels
    got = vectorize(tmp_path / "a.zarr", tmp_path / "z.parquet", chunk=8, workers=0, progress=False)
    assert_same(labels, read_parquet(tmp_path / "z.parquet"), 4)
    assert got.chunk == 8
    prob = np.where(labels > 0, 0.8, 0.1).astype(np.float32)
    tif = write_geotiff(tmp_path / "p.tif", prob, crs=None)
    vectorize(tif, tmp_path / "p.parquet", threshold=0.5, chunk=16, workers=0, progress=False)
    rows = read_parquet(tmp_path / "p.parquet")
    assert_same(labels, rows, 4)
    assert all(r["mean_probability"] == pytest.approx(0.8) for *_, r in rows.values())
    assert all("area_px" in r for *_, r in rows.values())


def test_slide_store_is_in_level0_pixels_and_square_microns(tmp_path: Path) -> None:
    labels = np.zeros((20, 20), np.uint8)
    labels[2:6, 3:9] = 1
    group = zarr.open_group(str(tmp_path / "slide.zarr"), mode="w")
    group.create_array("labels", shape=labels.shape, chunks=(8, 8), dtype="uint8")[:] = labels
    group.attrs.update(
        {"classes": ["nucleus"], "status": "complete", "mpp": 1.0, "downsample": 4.0}
    )
    out = tmp_path / "cells.qupath.geojson"
    vectorize(tmp_path / "slide.zarr", out, workers=0, progress=False)
    import json

    (feat,) = json.loads(out.read_text())["features"]
    geom = shapely.geometry.shape(feat["geometry"])
    assert geom.bounds == (12.0, 8.0, 36.0, 24.0)  # level-0 pixels = label pixels x 4
    measured = feat["properties"]["measurements"]
    assert measured["Area µm^2"] == pytest.approx(24.0)  # 24 px x 1 µm²
    assert measured["Perimeter µm"] == pytest.approx(20.0)  # (4 + 6) x 2 px x 1 µm
    assert measured["Circularity"] == pytest.approx(4 * np.pi * 24 / 20**2)


# ---- bad inputs: one clear line each ------------------------------------------------------


def test_multiband_raster_is_refused(tmp_path: Path) -> None:
    tif = write_geotiff(tmp_path / "rgb.tif", np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(InputError, match=r"has 3 bands; vectorize needs a single-band"):
        vectorize(tif, tmp_path / "o.geojson", workers=0)


def test_float_raster_needs_threshold(tmp_path: Path) -> None:
    tif = write_geotiff(tmp_path / "p.tif", np.zeros((8, 8), np.float32))
    with pytest.raises(
        InputError, match=r"holds float32 values \(probabilities\?\); pass --threshold"
    ):
        vectorize(tif, tmp_path / "o.geojson", workers=0)


def test_class_not_present(tmp_path: Path) -> None:
    labels = blobs((16, 16), seed=1)
    store = make_store(tmp_path / "s.zarr", labels, labels[None], classes=["building"])
    with pytest.raises(
        ConfigError, match=r"class 'road' is not in .*s\.zarr \(classes: 1=building\)"
    ):
        vectorize(store, tmp_path / "o.geojson", classes=["road"], workers=0)
    with pytest.raises(ConfigError, match=r"class '3' is not in"):
        vectorize(store, tmp_path / "o.geojson", classes=[3], workers=0)


def test_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown output format 'shp'; choose one of geojson"):
        vectorize(np.zeros((4, 4), np.uint8), tmp_path / "o.shp", format="shp", workers=0)
    with pytest.raises(ConfigError, match=r"cannot tell the output format from 'o\.shp'"):
        vectorize(np.zeros((4, 4), np.uint8), tmp_path / "o.shp", workers=0)


def test_unwritable_output(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"directory .*missing does not exist; create it first"):
        vectorize(np.zeros((4, 4), np.uint8), tmp_path / "missing" / "o.geojson", workers=0)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        with pytest.raises(ConfigError, match=r"is not writable"):
            vectorize(np.zeros((4, 4), np.uint8), locked / "o.geojson", workers=0)
    finally:
        locked.chmod(0o700)


def test_existing_output_needs_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "o.geojson"
    out.write_text("old")
    with pytest.raises(OutputExistsError, match=r"already exists; pass --overwrite"):
        vectorize(np.ones((4, 4), np.uint8), out, workers=0)
    vectorize(np.ones((4, 4), np.uint8), out, workers=0, overwrite=True, progress=False)
    assert out.read_text().startswith('{"type":"FeatureCollection"')


def test_incomplete_store_and_missing_input(tmp_path: Path) -> None:
    labels = blobs((16, 16), seed=1)
    store = make_store(
        tmp_path / "s.zarr", labels, labels[None], classes=["building"], status="running"
    )
    with pytest.raises(InputError, match=r"has status 'running', not 'complete'"):
        open_labels(store)
    with pytest.raises(InputError, match=r"does not exist; give a gigaseg store or a label raster"):
        open_labels(tmp_path / "nope.tif")


def test_bad_options(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"connectivity must be 4 or 8, got 6"):
        vectorize(np.ones((4, 4), np.uint8), tmp_path / "o.geojson", connectivity=6)
    with pytest.raises(ConfigError, match=r"min_area must be a finite number >= 0, got -1"):
        vectorize(np.ones((4, 4), np.uint8), tmp_path / "o.geojson", min_area=-1)
    with pytest.raises(ConfigError, match=r"threshold must be between 0 and 1, got 2"):
        vectorize(np.ones((4, 4), np.float32), tmp_path / "o.geojson", threshold=2)
