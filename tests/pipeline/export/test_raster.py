"""``gigaseg export``: a store as a Cloud-Optimized GeoTIFF (labels or one class's probabilities).

The store is predicted from the real Landsat scene in tests/data (its collar makes skipped
tiles) with a tiny random U-Net pinned to fp32; the COG must validate, equal the store pixel
for pixel, carry the source's CRS and transform, and mark skipped tiles as nodata.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rio_cogeo.cogeo import cog_validate

from pipeline.errors import ConfigError, InputError, OutputExistsError
from pipeline.export import export_raster
from pipeline.export.features import class_color
from pipeline.predict import predict
from pipeline.store import SKIPPED, open_group, read_ledger, set_status
from pipeline.vectorize.source import open_labels
from tests.workflows.conftest import save_tiny_model

ROOT = Path(__file__).parents[3]
LANDSAT = ROOT / "tests" / "data" / "geotiff" / "RGB.byte.tif"
TILE = 128


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("raster")
    model = save_tiny_model(folder / "tiny.safetensors")
    path = folder / "landsat.zarr"
    predict(LANDSAT, model, path, tile=TILE, workers=0, progress=False, precision="fp32")
    return path


def _ledger_mask(store, shape):
    """True where the tile was skipped, at pixel resolution."""
    ledger = read_ledger(store)
    full = np.kron(ledger == SKIPPED, np.ones((TILE, TILE), bool))
    return full[: shape[0], : shape[1]]


def test_label_cog_equals_the_store(store, tmp_path):
    out = tmp_path / "mask.tif"
    report = export_raster(store, out)
    valid, errors, _ = cog_validate(str(out))
    assert valid, errors
    labels = np.asarray(open_group(store)["labels"][...])
    skipped = _ledger_mask(store, labels.shape)
    assert skipped.any() and (~skipped).any()  # the collar really skipped tiles
    with rasterio.open(out) as cog, rasterio.open(LANDSAT) as source:
        assert cog.crs == source.crs and cog.transform == source.transform
        assert cog.shape == source.shape == labels.shape
        values = cog.read(1)
        assert cog.nodata == 255
        assert cog.colormap(1)[1] == (*class_color(1), 255)
        assert cog.colormap(1)[0][:3] == (0, 0, 0)  # background black (TIFF has no alpha)
        assert json.loads(cog.tags()["classes"]) == ["background", "building"]
        assert cog.overviews(1) == report.overviews and report.overviews
        overview = cog.read(1, out_shape=(labels.shape[0] // 2, labels.shape[1] // 2))
    np.testing.assert_array_equal(values[~skipped], labels[~skipped])
    assert (values[skipped] == 255).all()
    computed = labels[~skipped]
    computed = computed[computed != 255]  # collar pixels inside computed tiles are nodata
    assert 0 < computed.mean() < 1  # both classes present
    assert set(np.unique(overview)) <= {0, 1, 255}  # mode overviews keep class ids
    assert report.nodata_tiles == int((read_ledger(store) == SKIPPED).sum())
    assert open_labels(out).names == {1: "building"}  # vectorize reads the class names back


def test_probability_cog_equals_the_stored_probabilities(store, tmp_path):
    out = tmp_path / "p.tif"
    report = export_raster(store, out, class_name="building")
    assert report.kind == "probabilities" and report.resampling == "average"
    assert cog_validate(str(out))[0]
    stored = np.asarray(open_group(store)["probabilities"][0])
    skipped = _ledger_mask(store, stored.shape)
    with rasterio.open(out) as cog:
        assert cog.dtypes[0] == "uint8"
        np.testing.assert_array_equal(cog.read(1), stored)
        mask = cog.dataset_mask()
    labels = np.asarray(open_group(store)["labels"][...])
    invalid = labels == 255  # the collar: nodata source pixels inside computed tiles
    assert (invalid & ~skipped).any()
    assert (mask[skipped | invalid] == 0).all() and (mask[~skipped & ~invalid] == 255).all()
    with rasterio.open(out) as cog:
        overview = cog.read(1, out_shape=(stored.shape[0] // 4, stored.shape[1] // 4))
    assert 0 < overview.mean() < 255


def test_existing_output_needs_overwrite_and_nothing_half_written(store, tmp_path):
    out = tmp_path / "mask.tif"
    export_raster(store, out)
    with pytest.raises(OutputExistsError, match="--overwrite"):
        export_raster(store, out)
    export_raster(store, out, overwrite=True, resampling="nearest")
    with pytest.raises(ConfigError, match="class ids cannot be averaged"):
        export_raster(store, tmp_path / "a.tif", resampling="average")
    with pytest.raises(ConfigError, match=r"class 'road' is not in .*\(classes: building\)"):
        export_raster(store, tmp_path / "b.tif", class_name="road")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.tif"]


def test_incomplete_store_is_refused(store, tmp_path):
    set_status(store, "running")
    try:
        with pytest.raises(InputError, match="not 'complete'; finish the run"):
            export_raster(store, tmp_path / "m.tif")
    finally:
        set_status(store, "complete")
    assert list(tmp_path.iterdir()) == []


def test_cli_exports_and_reports_errors_in_one_line(store, tmp_path):
    out = tmp_path / "cli.tif"
    cmd = [sys.executable, "-m", "workflows", "export", str(store), "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["path"] == str(out) and cog_validate(str(out))[0]
    again = subprocess.run(
        [*cmd, "--class", "nope", "--overwrite"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert again.returncode == 1
    assert again.stderr.strip().splitlines() == [
        f"gigaseg export: error: class 'nope' is not in {store} (classes: building); "
        "pass a listed name"
    ]


def test_gdal_reads_the_store_labels_as_the_export_writes_them(store, tmp_path):
    """GDAL on the store itself: skipped tiles are nodata (255), as in the COG export."""
    out = tmp_path / "mask.tif"
    export_raster(store, out)
    with rasterio.open(f'ZARR:"{store / "labels"}"') as zarr, rasterio.open(out) as cog:
        assert zarr.nodata == cog.nodata == 255
        assert zarr.crs == cog.crs
        # GDAL derives a Zarr transform from the x/y pixel centres ((last - first) / (n - 1)):
        # Landsat's 300.0379... m pixels come back within float rounding, not bit for bit
        assert zarr.transform.almost_equals(cog.transform, precision=1e-9)
        np.testing.assert_array_equal(zarr.read(1), cog.read(1))
        np.testing.assert_array_equal(zarr.read_masks(1), cog.read_masks(1))


def test_card_colours_colour_the_cog_and_the_slide_pyramid(store, tmp_path):
    """A model card's class colours are the COG's colour table and the NGFF label colours."""
    from pipeline.store import read_attrs
    from pipeline.store.pyramid import PYRAMID, build_labels_pyramid

    before = read_attrs(store).get("class_colors")
    set_status(store, "complete", class_colors=[[220, 50, 47]])
    try:
        out = tmp_path / "mask.tif"
        export_raster(store, out)
        with rasterio.open(out) as cog:
            assert cog.colormap(1)[1] == (220, 50, 47, 255)
        build_labels_pyramid(store)
        ome = read_attrs(store / PYRAMID)["ome"]
        assert ome["image-label"]["colors"] == [{"label-value": 1, "rgba": [220, 50, 47, 255]}]
    finally:
        set_status(store, "complete", class_colors=before)
        shutil.rmtree(store / PYRAMID, ignore_errors=True)


def test_the_export_block_cache_is_64_mb_not_64_bytes():
    from rasterio.env import get_gdal_config

    from pipeline.export.raster import gdal_options

    with rasterio.Env(**gdal_options()):
        assert get_gdal_config("GDAL_CACHEMAX") == 64 * 2**20


def _synthetic_store(path, rows, cols, tile, classes):
    """A complete multi-class store written through pipeline.store (no model needed)."""
    from pipeline.store import complete_store, create_store, mark_tiles, to_stored, write_core
    from pipeline.tile.grid import Window

    grid = (-(-rows // tile), -(-cols // tile))
    attrs = {
        "crs": "EPSG:32633", "transform": [500000.0, 0.3, 0.0, 6e6, 0.0, -0.7],
        "classes": classes, "run_id": "synthetic", "shape": [rows, cols], "tile": tile,
        "labels_nodata": 255,
    }  # fmt: skip
    create_store(path, shape=(rows, cols), outputs=len(classes), tile=tile, grid_shape=grid,
                 probabilities="uint8", attrs=attrs)  # fmt: skip
    rng = np.random.default_rng(1)
    for r in range(grid[0]):
        for c in range(grid[1]):
            window = Window(r * tile, c * tile, min(tile, rows - r * tile),
                            min(tile, cols - c * tile))  # fmt: skip
            p = rng.random((len(classes), window.height, window.width)).astype(np.float32)
            p /= p.sum(axis=0)
            write_core(str(path), window, to_stored(p, "uint8"),
                       p.argmax(axis=0).astype(np.uint8), "synthetic")  # fmt: skip
            mark_tiles(str(path), [(r, c)], 1, "synthetic")
    complete_store(path, run_id="synthetic")
    return path


@pytest.mark.parametrize(("rows", "cols"), [(37, 53), (600, 1100)])
def test_tiny_and_odd_sized_stores_make_valid_cogs(tmp_path, rows, cols):
    classes = ["background", "building", "road", "water"]
    store = _synthetic_store(tmp_path / "s.zarr", rows, cols, 96, classes)
    labels = np.asarray(open_group(store)["labels"][...])
    assert set(np.unique(labels)) == {0, 1, 2, 3}
    for kwargs in ({}, {"class_name": "road"}):
        out = tmp_path / f"{kwargs.get('class_name', 'labels')}.tif"
        report = export_raster(store, out, **kwargs)
        valid, errors, _ = cog_validate(str(out))
        assert valid, errors
        with rasterio.open(out) as cog:
            assert tuple(cog.transform)[:6] == (0.3, 0.0, 500000.0, 0.0, -0.7, 6e6)
            assert (report.overviews != []) == (max(rows, cols) > 512)
            if not kwargs:
                np.testing.assert_array_equal(cog.read(1), labels)
                assert json.loads(cog.tags()["classes"]) == classes
                assert {i: cog.colormap(1)[i][:3] for i in (1, 2, 3)} == {
                    i: class_color(i) for i in (1, 2, 3)
                }
            else:
                stored = np.asarray(open_group(store)["probabilities"][2])
                np.testing.assert_array_equal(cog.read(1), stored)
