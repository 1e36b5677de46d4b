"""Every command on sources that live on servers started here (HTTP with Range, S3 by moto).

``gigaseg predict`` from ``http://``, ``s3://`` and ``/vsis3/`` equals the local run bit for
bit; a STAC item of single-band assets equals the stacked local file; ``vectorize``,
``preview``, ``evaluate`` and ``info`` take URLs and ``/vsis3/`` paths; a workflow with a URL
input runs; a corrupt middle tile fails with one line naming file and window.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import zarr

from pipeline.errors import ReadError
from pipeline.stitch import read_attrs
from tests.servers import copy_to
from workflows.cli import main

from .conftest import write_geotiff

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
)


def _predict(source: str | Path, model: Path, out: Path, *extra: str) -> int:
    argv = ["predict", str(source), "--model", str(model), "--out", str(out), "--tile", "32"]
    return main([*argv, "--precision", "fp32", "--workers", "0", "--no-progress", *extra])


def _arrays(store: Path) -> tuple[np.ndarray, np.ndarray]:
    group: Any = zarr.open_group(str(store), mode="r")
    return np.asarray(group["probabilities"][...]), np.asarray(group["labels"][...])


def _assert_same_store(store: Path, reference: Path) -> None:
    got, want = _arrays(store), _arrays(reference)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    attrs, ref_attrs = read_attrs(store), read_attrs(reference)
    assert attrs["status"] == "complete"
    assert attrs["crs"] == ref_attrs["crs"] and attrs["transform"] == ref_attrs["transform"]


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    return write_geotiff(tmp_path / "data" / "scene.tif", height=72, width=88, seed=3)


@pytest.fixture
def local_store(tmp_path: Path, tiny_model: Path, scene: Path) -> Path:
    out = tmp_path / "local.zarr"
    assert _predict(scene, tiny_model, out) == 0
    return out


def test_predict_from_http_equals_local(http_server, tiny_model, scene, local_store, tmp_path):
    copy_to(http_server.root, scene)
    out = tmp_path / "http.zarr"
    assert _predict(http_server.url("scene.tif"), tiny_model, out) == 0
    _assert_same_store(out, local_store)
    assert read_attrs(out)["source"] == http_server.url("scene.tif")
    assert http_server.counter.requests  # really read from the server


def test_predict_command_from_s3_and_vsis3_equals_local(
    s3_server, tiny_model, scene, local_store, tmp_path
):
    url = s3_server.put("gigaseg-test", "scenes/scene.tif", scene)
    out = tmp_path / "s3.zarr"
    # the installed command, in its own process: credentials and endpoint come from the
    # environment (AWS_*), as a user would set them
    command = [sys.executable, "-m", "workflows", "predict", url, "--model", str(tiny_model)]
    command += ["--out", str(out), "--tile", "32", "--precision", "fp32", "--workers", "0"]
    done = subprocess.run(
        [*command, "--no-progress"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    _assert_same_store(out, local_store)
    assert "testing" not in json.dumps(read_attrs(out))  # no key in the store
    vsi = tmp_path / "vsis3.zarr"
    assert _predict("/vsis3/gigaseg-test/scenes/scene.tif", tiny_model, vsi) == 0
    _assert_same_store(vsi, local_store)


def _stac_item(folder: Path, scene: Path) -> Path:
    """Split ``scene`` into one single-band COG per band, described by a STAC item."""
    with rasterio.open(scene) as dataset:
        profile = dataset.profile
        bands = dataset.read()
    profile.update(count=1, tiled=True, blockxsize=32, blockysize=32, compress="deflate")
    assets = {}
    for index, (key, common) in enumerate([("B02", "blue"), ("B03", "green"), ("B04", "red")]):
        with rasterio.open(folder / f"{key}.tif", "w", **profile) as out:
            out.write(bands[2 - index], 1)  # the scene is (red, green, blue)
        assets[key] = {
            "href": f"./{key}.tif",
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "roles": ["data"],
            "eo:bands": [{"name": key, "common_name": common}],
        }
    assets["thumbnail"] = {"href": "thumb.png", "type": "image/png", "roles": ["thumbnail"]}
    item = {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": ["https://stac-extensions.github.io/eo/v1.1.0/schema.json"],
        "id": "scene",
        "geometry": None,
        "properties": {"datetime": "2026-01-01T00:00:00Z"},
        "assets": assets,
        "links": [],
    }
    path = folder / "item.json"
    path.write_text(json.dumps(item))
    return path


def test_stac_item_of_band_assets_equals_the_stacked_file(
    http_server, tiny_model, scene, local_store, tmp_path, capsys
):
    item = _stac_item(http_server.root, scene)
    out = tmp_path / "stac.zarr"
    url = http_server.url(item.name)
    assert _predict(url, tiny_model, out, "--assets", "red,green,blue") == 0
    _assert_same_store(out, local_store)
    local = tmp_path / "stac-local.zarr"  # the item as a local file, assets by key
    assert _predict(item, tiny_model, local, "--assets", "B04,B03,B02") == 0
    _assert_same_store(local, local_store)
    capsys.readouterr()
    assert _predict(url, tiny_model, tmp_path / "x.zarr", "--assets", "red,swir16") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no asset or eo:bands common name 'swir16'" in err[0]
    assert main(["info", url, "--assets", "red,green,blue"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [a["key"] for a in info["assets"]] == ["B04", "B03", "B02"]


def test_vectorize_preview_evaluate_info_take_urls_and_vsis3(
    http_server, s3_server, local_store, scene, tmp_path, capsys
):
    labels = tmp_path / "labels.tif"
    with rasterio.open(scene) as dataset:
        profile = dataset.profile
    profile.update(count=1, dtype="uint8")
    with rasterio.open(labels, "w", **profile) as out:
        out.write(_arrays(local_store)[1], 1)
    copy_to(http_server.root, labels)
    copy_to(http_server.root, scene)
    s3_labels = s3_server.put("gigaseg-test", "labels.tif", labels)
    url = http_server.url("labels.tif")
    ref = tmp_path / "ref.geojson"
    assert main(["vectorize", str(labels), "--out", str(ref), "--workers", "0"]) == 0
    for i, remote in enumerate([url, s3_labels, "/vsis3/gigaseg-test/labels.tif"]):
        out = tmp_path / f"v{i}.geojson"
        assert main(["vectorize", remote, "--out", str(out), "--workers", "0"]) == 0
        assert out.read_bytes() == ref.read_bytes()
    png = tmp_path / "p.png"
    argv = ["preview", http_server.url("scene.tif"), "--vectors", str(ref), "--out", str(png)]
    assert main(argv) == 0 and png.stat().st_size > 0
    # outlines from a server and a bucket draw the same picture as the local file
    copy_to(http_server.root, ref)
    s3_server.put("gigaseg-test", "ref.geojson", ref)
    for i, vectors in enumerate(
        [http_server.url("ref.geojson?sig=x"), "s3://gigaseg-test/ref.geojson"]
    ):
        remote_png = tmp_path / f"p-remote{i}.png"
        argv = ["preview", http_server.url("scene.tif"), "--vectors", vectors]
        assert main([*argv, "--out", str(remote_png)]) == 0
        assert remote_png.read_bytes() == png.read_bytes()
    capsys.readouterr()
    argv = ["preview", str(scene), "--labels", http_server.url("s.zarr?sig=x"), "--out", "x.png"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--labels takes a local gigaseg store" in err[0], err
    assert "sig=REDACTED" in err[0]
    png_s3 = tmp_path / "p3.png"
    assert main(["preview", "/vsis3/gigaseg-test/labels.tif", "--out", str(png_s3)]) == 0
    capsys.readouterr()
    assert main(["evaluate", url, "/vsis3/gigaseg-test/labels.tif"]) == 0
    table = capsys.readouterr().out
    assert "pixel IoU [class_1]" in table and "1.0000" in table
    for path in ("/vsis3/gigaseg-test/labels.tif", s3_labels, url):
        assert main(["info", path]) == 0
        info = json.loads(capsys.readouterr().out)
        assert info["shape"] == [72, 88] and info["source"] == path


def test_workflow_with_url_input_runs(
    http_server, tiny_model, scene, local_store, tmp_path, write_workflow
):
    copy_to(http_server.root, scene)
    spec = {
        "name": "remote",
        "inputs": [http_server.url("scene.tif")],
        "model": str(tiny_model),
        "tiling": {"tile": 32},
        "inference": {"precision": "fp32"},
        "output": {"dir": str(tmp_path / "out")},
        "cluster": {"type": "local", "local": {"n_workers": 1, "threads_per_worker": 1}},
    }
    path = write_workflow(spec)
    assert main(["run", str(path), "--dry-run"]) == 0
    assert main(["run", str(path)]) == 0
    store = tmp_path / "out" / "scene.zarr"  # {stem} from the URL's path
    _assert_same_store(store, local_store)
    report = json.loads((tmp_path / "out" / "gigaseg-report.json").read_text())
    assert report["scenes"][0]["input"] == http_server.url("scene.tif")


def test_corrupt_middle_tile_fails_naming_file_and_window(
    http_server, tiny_model, tmp_path, capsys
):
    from tests.pipeline.read.test_remote import _corrupt_block

    path = write_geotiff(http_server.root / "bad.tif", height=128, width=128, seed=4)
    with rasterio.open(path) as dataset:
        profile = dataset.profile
        pixels = dataset.read()
    profile.update(tiled=True, blockxsize=32, blockysize=32, compress="deflate")
    with rasterio.open(path, "w", **profile) as out:
        out.write(pixels)
    _corrupt_block(path, 2, 2)
    out = tmp_path / "bad.zarr"
    assert _predict(http_server.url("bad.tif"), tiny_model, out) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, "\n".join(err)
    assert err[0].startswith(f"gigaseg predict: error: {http_server.url('bad.tif')}: ")
    assert "cannot read window rows " in err[0] and "TIFFReadEncodedTile" in err[0]
    assert read_attrs(out).get("status") != "complete"


def test_corrupt_tile_of_a_nodata_scene_marks_the_store_failed(
    http_server, tiny_model, tmp_path, capsys
):
    from tests.pipeline.read.test_remote import _corrupt_block

    path = write_geotiff(http_server.root / "bad.tif", height=128, width=128, seed=4)
    with rasterio.open(path) as dataset:
        profile, pixels = dataset.profile, dataset.read()
    profile.update(tiled=True, blockxsize=32, blockysize=32, compress="deflate", nodata=0)
    with rasterio.open(path, "w", **profile) as out:
        out.write(np.maximum(pixels, 1))
    _corrupt_block(path, 2, 2)
    url = http_server.url("bad.tif?X-Amz-Signature=s3cretsig")
    out = tmp_path / "bad.zarr"
    assert _predict(url, tiny_model, out) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, "\n".join(err)
    assert err[0].startswith(f"gigaseg predict: error: {http_server.url('bad.tif')}?")
    assert "cannot read window rows " in err[0] and "TIFFReadEncodedTile" in err[0]
    assert "s3cretsig" not in err[0]
    attrs = read_attrs(out)
    assert attrs["status"] == "failed" and "cannot read window rows" in attrs["error"]
    assert "s3cretsig" not in (out / "zarr.json").read_text()
    # --debug lets the error through (Python prints its traceback)
    argv = ["--debug", "predict", url, "--model", str(tiny_model), "--out", str(out)]
    with pytest.raises(ReadError, match="cannot read window rows"):
        main([*argv, "--overwrite", "--workers", "0", "--no-progress"])


def test_credentials_stay_out_of_stores_and_reports(tmp_path, tiny_model, scene):
    from tests.servers import RangeServer

    root = tmp_path / "private"
    root.mkdir()
    copy_to(root, scene)
    server = RangeServer(root, auth="user:hunter2").start()
    try:
        url = f"http://user:hunter2@127.0.0.1:{server.port}/scene.tif?token=abc123"
        out = tmp_path / "auth.zarr"
        assert _predict(url, tiny_model, out, "--report", str(tmp_path / "r.json")) == 0
    finally:
        server.stop()
    text = (out / "zarr.json").read_text() + (tmp_path / "r.json").read_text()
    assert "hunter2" not in text and "abc123" not in text
    assert f"127.0.0.1:{server.port}/scene.tif" in text
    assert os.environ.get("GDAL_HTTP_USERPWD") is None  # nothing leaked into the environment
