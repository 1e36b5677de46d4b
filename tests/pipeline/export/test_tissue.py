"""The tissue mask a slide run used is exportable as QuPath annotations in level-0 pixels."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from shapely.geometry import shape
from shapely.ops import unary_union

from pipeline.errors import InputError
from pipeline.export.tissue import export_tissue
from pipeline.predict import predict
from tests.pipeline.read.slides import brightfield, write_svs
from tests.pipeline.read.synthetic import write_geotiff
from tests.pipeline.tinynet import TinyUNet, save_torchscript

ROOT = Path(__file__).parents[3]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tissue-export")
    model = save_torchscript(TinyUNet(seed=5), folder / "tiny.pt")
    image, truth = brightfield(400, 520, seed=4)
    slide = write_svs(folder / "he.svs", image, levels=2, tile=128)
    store = folder / "he.zarr"
    predict(slide, model, store, tile=64, workers=0, precision="fp32", progress=False)
    return model, store, truth


def test_exported_tissue_covers_the_recorded_mask_in_level0_pixels(tmp_path, run):
    _, store, truth = run
    out = tmp_path / "tissue.geojson"
    count = export_tissue(store, out)
    data = json.loads(out.read_text())
    assert count == len(data["features"]) >= 1
    for feature in data["features"]:
        assert feature["properties"]["objectType"] == "annotation"
        assert feature["properties"]["classification"]["name"] == "Tissue"
    area = unary_union([shape(f["geometry"]) for f in data["features"]]).area
    group = zarr.open_group(str(store), mode="r")
    recorded = group["tissue"][...]
    rows, cols = group.attrs["tissue"]["scale"]
    assert area == pytest.approx(recorded.sum() * rows * cols, rel=1e-6)
    # it lies where the slide's tissue is: mostly inside the true (level-0) tissue
    inside = truth[::8, ::8].mean()
    assert 0 < inside < 1
    union = unary_union([shape(f["geometry"]) for f in data["features"]])
    minx, miny, maxx, maxy = union.bounds
    assert minx >= 0 and miny >= 0 and maxx <= truth.shape[1] and maxy <= truth.shape[0]
    assert np.isclose(area / (truth.shape[0] * truth.shape[1]), truth.mean(), atol=0.1)


def test_no_overwrite_and_a_geotiff_store_is_refused(tmp_path, run):
    model, store, _ = run
    out = tmp_path / "t.geojson"
    export_tissue(store, out)
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_tissue(store, out)
    tif = write_geotiff(tmp_path / "g.tif", np.zeros((3, 64, 64), np.uint8))
    predict(tif, model, tmp_path / "g.zarr", tile=64, workers=0, progress=False)
    with pytest.raises(InputError, match="records no tissue mask"):
        export_tissue(tmp_path / "g.zarr", tmp_path / "g.geojson")


def test_cli_export_tissue(tmp_path, run):
    _, store, _ = run
    out = tmp_path / "cli.geojson"
    cmd = [sys.executable, "-m", "workflows", "export", str(store), "--tissue", "--out"]
    done = subprocess.run([*cmd, str(out)], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["tissue_annotations"] >= 1 and out.exists()
    bad = subprocess.run(
        [*cmd, str(tmp_path / "x.tif")], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert bad.returncode != 0 and "give --out F.geojson" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_a_run_that_used_no_mask_says_why(tmp_path, run):
    model, _, _ = run
    rng = np.random.default_rng(2)
    full = np.clip(np.array([200.0, 110, 180]) + rng.normal(0, 20, (128, 160, 3)), 0, 255)
    slide = write_svs(tmp_path / "full.svs", full.astype(np.uint8), levels=1, tile=64)
    predict(slide, model, tmp_path / "f.zarr", tile=64, workers=0, progress=False)
    with pytest.raises(InputError, match=r"the run used none \(no tissue/background contrast"):
        export_tissue(tmp_path / "f.zarr", tmp_path / "f.geojson")
    assert not (tmp_path / "f.geojson").exists()
