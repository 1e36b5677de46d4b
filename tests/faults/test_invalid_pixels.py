"""Invalid pixels: small valid areas in huge sparse scenes, nodata and NaN inside tiles.

- A tile is skipped only when none of its pixels holds data. The validity mask used to be a
  ~1000-pixel thumbnail of the scene: on a 200000² scene with a 60 x 60 valid block the block
  fell between samples and the run reported "0 computed, 9604 skipped", complete. Expected:
  validity exact at the file's block level (absent sparse blocks need no read), so the tile
  holding the data is computed and only truly empty tiles are skipped.
- NaN or nodata inside a partly valid tile used to be fed to the model raw (a NaN block gave
  p = 0 over a wider area, status complete). Expected: invalid pixels (NaN, nodata, mask band)
  are filled with the model's band means before the model, stored as nodata (labels 255,
  probabilities 0 or NaN), vectorized as nothing -- and on the valid pixels the tiled result
  equals the whole-image reference computed on the same filled image.
- ``vectorize`` of a sparse store used to read and trace every chunk, 2401 empty ones of a
  200000² store. Expected: chunks whose tiles the ledger marks skipped are not read at all
  (a corrupt chunk file there is never decoded), and the polygons are the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window as RioWindow

import pipeline
from pipeline.infer.model import describe_model
from pipeline.infer.predictor import Predictor
from pipeline.infer.reference import reference_predict
from pipeline.predict import NODATA_LABEL, predict
from pipeline.read.geotiff import GeoTiffSource
from pipeline.tile.grid import Window
from tests.workflows.conftest import read_features, read_store, synthetic
from workflows.run import store_attributes


def sparse_scene(path: Path, size: int, block: tuple[int, int, int, int]) -> Path:
    """A ``size``² 3-band sparse tiled GeoTIFF (nodata 0) with one valid ``block``."""
    row, col, height, width = block
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=size,
        width=size,
        count=3,
        dtype="uint8",
        nodata=0,
        tiled=True,
        blockxsize=256,
        blockysize=256,
        sparse_ok=True,
        crs="EPSG:32616",
        transform=Affine(0.5, 0.0, 733601.0, 0.0, -0.5, 3725139.0),
    ) as dst:
        data = synthetic(height, width, 3, seed=4).astype(np.uint8) | 1  # no pixel equals 0
        dst.write(data, window=RioWindow(col, row, width, height))
    return path


def ledger(store: Path) -> np.ndarray:
    import zarr

    return np.asarray(zarr.open_array(str(store / "tiles"), mode="r")[...])


@pytest.mark.timeout(300)
def test_a_small_valid_block_in_a_huge_sparse_scene_is_computed(
    tmp_path: Path, tiny_model: Path
) -> None:
    # 20000² (400 Mpx; 120 KB on disk) with a 6 x 6 valid block off every sampling grid.
    scene = sparse_scene(tmp_path / "sparse.tif", 20000, (7777, 12345, 6, 6))
    store = tmp_path / "sparse.zarr"
    kwargs: dict[str, Any] = {"tile": 1024, "workers": 0, "progress": False}
    report = predict(scene, tiny_model, store, precision="fp32", **kwargs)
    assert report.tiles_computed == 1 and report.tiles_skipped == 399
    states = ledger(store)
    assert states[7777 // 1024, 12345 // 1024] == 1  # done, not skipped
    assert (states == 2).sum() == 399
    assert store_attributes(store)["status"] == "complete"


def test_validity_is_exact_at_cell_level_and_never_misses_a_pixel(tmp_path: Path) -> None:
    scene = sparse_scene(tmp_path / "s.tif", 4096, (1000, 2000, 1, 1))  # one valid pixel
    validity = GeoTiffSource(scene).validity()
    assert validity is not None and validity.mask.sum() == 1
    assert validity.any(Window(1000, 2000, 1, 1))
    assert validity.any(Window(0, 0, 1001, 2001))
    assert not validity.any(Window(0, 0, 992, 4096))  # rows above its 32-pixel cell
    assert not validity.any(Window(1024, 0, 3072, 4096))  # rows below its 32-pixel cell


def test_stripped_files_are_exact_too(tmp_path: Path) -> None:
    path = tmp_path / "strips.tif"
    data = np.zeros((3, 700, 900), np.uint8)
    data[:, 650, 899] = 9  # one pixel in the last row of strips, last column
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=700,
        width=900,
        count=3,
        dtype="uint8",
        nodata=0,
        crs="EPSG:32616",
        transform=Affine(0.5, 0.0, 733601.0, 0.0, -0.5, 3725139.0),
    ) as dst:
        dst.write(data)
    validity = GeoTiffSource(path).validity()
    assert validity is not None and validity.mask.sum() == 1
    assert validity.any(Window(640, 896, 32, 4))
    assert not validity.any(Window(0, 0, 640, 900))


def write_float_scene(path: Path, image: np.ndarray, nodata: float | None = None) -> Path:
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=image.shape[1],
        width=image.shape[2],
        count=image.shape[0],
        dtype=image.dtype,
        nodata=nodata,
        crs="EPSG:32616",
        transform=Affine(0.5, 0.0, 733601.0, 0.0, -0.5, 3725139.0),
    ) as dst:
        dst.write(image)
    return path


def reference(model: Path, image: np.ndarray) -> np.ndarray:
    info, network = describe_model(str(model))
    forward = Predictor(network, info, precision="fp32")
    return reference_predict(forward, image, halo=info.halo or 0, sizes=info.sizes)


@pytest.mark.parametrize("marker", ["nan", "nodata"])
def test_invalid_pixels_are_masked_not_fed_raw_and_tiled_equals_whole(
    tmp_path: Path, tiny_model: Path, marker: str
) -> None:
    image = synthetic(64, 96, 3, seed=7)  # float32, 0..255
    hole = (slice(20, 30), slice(40, 50))  # inside tile (0, 1), in the halo of its neighbours
    if marker == "nan":
        image[:, hole[0], hole[1]] = np.nan
        scene = write_float_scene(tmp_path / "scene.tif", image)
    else:
        image = image.astype(np.uint8) | 1
        image[:, hole[0], hole[1]] = 0
        scene = write_float_scene(tmp_path / "scene.tif", image, nodata=0)
    store = tmp_path / "scene.zarr"
    kwargs: dict[str, Any] = {"tile": 32, "workers": 0, "progress": False, "precision": "fp32"}
    predict(scene, tiny_model, store, **kwargs)
    probs, labels = read_store(store)
    invalid = np.zeros(labels.shape, bool)
    invalid[hole] = True
    assert (labels[invalid] == NODATA_LABEL).all() and (probs[:, invalid] == 0).all()
    assert (labels[~invalid] != NODATA_LABEL).all()
    # The model saw the band means (100, what it normalises to 0) where there was no data.
    filled = image.astype(np.float32)
    filled[:, invalid] = 100.0
    expected = np.rint(np.clip(reference(tiny_model, filled), 0, 1) * 255).astype(np.uint8)
    assert np.abs(probs[:, ~invalid].astype(int) - expected[:, ~invalid].astype(int)).max() <= 1
    assert store_attributes(store)["status"] == "complete"
    assert store_attributes(store)["labels_nodata"] == NODATA_LABEL


def test_nodata_labels_are_not_vectorized(tmp_path: Path, tiny_model: Path) -> None:
    import json

    import pipeline

    image = synthetic(64, 96, 3, seed=7)
    image[:, 20:30, 40:50] = np.nan
    scene = write_float_scene(tmp_path / "scene.tif", image)
    store = tmp_path / "scene.zarr"
    predict(scene, tiny_model, store, tile=32, workers=0, progress=False, precision="fp32")
    out = tmp_path / "scene.geojson"
    pipeline.vectorize(str(store), str(out), workers=0, progress=False)
    classes = {f["properties"]["class"] for f in json.loads(out.read_text())["features"]}
    assert classes <= {"building"}, classes


@pytest.mark.timeout(300)
def test_vectorize_of_a_sparse_store_reads_no_chunk_of_a_skipped_tile(
    tmp_path: Path, tiny_model: Path
) -> None:
    import shutil

    from pipeline.store import PENDING, SKIPPED, mark_tiles

    scene = sparse_scene(tmp_path / "sparse.tif", 2048, (700, 900, 300, 400))
    store = tmp_path / "sparse.zarr"
    predict(scene, tiny_model, store, tile=128, workers=0, progress=False, precision="fp32")
    skipped = np.argwhere(ledger(store) == SKIPPED)
    assert len(skipped) == 256 - 3 * 4  # 3 x 4 tiles hold the block
    # The same store with its ledger saying nothing was skipped: every chunk is read.
    every = tmp_path / "every.zarr"
    shutil.copytree(store, every)
    mark_tiles(str(every), [tuple(int(i) for i in t) for t in skipped], PENDING)
    # A chunk file of a skipped tile that would fail to decode if it were read.
    row, col = (int(i) for i in skipped[-1])
    (store / "labels" / str(row) / str(col)).parent.mkdir(parents=True, exist_ok=True)
    (store / "labels" / str(row) / str(col)).write_bytes(b"not zstd")

    kwargs: dict[str, Any] = {"chunk": 128, "workers": 0, "progress": False}
    sparse = pipeline.vectorize(store, tmp_path / "sparse.geojson", **kwargs)
    whole = pipeline.vectorize(every, tmp_path / "every.geojson", **kwargs)
    assert sparse.chunks == whole.chunks == 256
    assert sparse.chunks_skipped == len(skipped) and whole.chunks_skipped == 0
    assert sparse.features == whole.features > 0
    assert read_features(tmp_path / "sparse.geojson") == read_features(tmp_path / "every.geojson")
