"""``gigaseg predict / info / status`` end to end on tiny data, and every bad input the issue
lists: one line on stderr, exit 1, and no store marked complete."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from pipeline.stitch import read_attrs
from tests.pipeline.read.synthetic import write_geotiff, xy_image
from tests.pipeline.tinynet import TinyUNet, save_torchscript
from workflows.cli import main

DATA = Path(__file__).parents[1] / "data"
SVS = DATA / "wsi" / "CMU-1-Small-Region.svs"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_torchscript(TinyUNet(seed=0), tmp_path_factory.mktemp("m") / "tiny.pt")


@pytest.fixture
def image(tmp_path):
    return write_geotiff(tmp_path / "in.tif", xy_image(3, 48, 60))


def _predict(source, model, out, *extra):
    argv = ["predict", str(source), "--model", str(model), "--out", str(out)]
    return main([*argv, "--tile", "32", "--workers", "0", "--no-progress", *extra])


def test_predict_status_info(tmp_path, model, image, capsys):
    out = tmp_path / "o.zarr"
    assert _predict(image, model, out, "--report", str(tmp_path / "r.json")) == 0
    assert "4 tiles computed, 0 skipped" in capsys.readouterr().out
    assert json.loads((tmp_path / "r.json").read_text())["tiles_computed"] == 4
    assert main(["status", str(out)]) == 0
    assert "complete; tiles 4 done, 0 skipped, 0 left of 4" in capsys.readouterr().out
    assert main(["info", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["status"] == "complete" and info["tiles"]["done"] == 4 and info["tile"] == 32
    assert main(["info", str(image)]) == 0
    assert json.loads(capsys.readouterr().out)["shape"] == [48, 60]
    assert main(["info", str(SVS)]) == 0
    assert json.loads(capsys.readouterr().out)["mpp"] == pytest.approx(0.499)


def _readonly_dir(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):  # root ignores permissions: use a read-only mount
        return Path("/proc/sys")
    return folder


def _bad_cases(tmp_path, image):
    text = tmp_path / "text.tif"
    text.write_text("this is not an image")
    good = write_geotiff(tmp_path / "z.tif", xy_image(3, 64, 64), compress="deflate")
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    gray = write_geotiff(tmp_path / "gray.tif", xy_image(1, 40, 40))
    return {
        "missing file": ([tmp_path / "missing.tif"], "does not exist"),
        "not an image": ([text], "not a readable raster image"),
        "corrupt tiff": ([corrupt], "corrupt or unreadable"),
        "band count": ([gray], "gives 1 band(s) [1] but model"),
        "bands out of range": ([image, "--bands", "1,2,7"], "out of range"),
        "tile alignment": ([image, "--tile", "30"], "not a positive multiple of the model"),
        "halo > tile": ([image, "--halo", "64"], "halo 64 is larger than the tile 32"),
        "read-only dir": ([image], "not writable"),
        "level": ([SVS, "--level", "2"], "level 2 is not available"),
        "mpp": ([SVS, "--mpp", "0.1"], "finer than"),
    }


CASES = [
    "missing file",
    "not an image",
    "corrupt tiff",
    "band count",
    "bands out of range",
    "tile alignment",
    "halo > tile",
    "read-only dir",
    "level",
    "mpp",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_inputs_one_line_nonzero_nothing_complete(tmp_path, model, image, capsys, case):
    args, message = _bad_cases(tmp_path, image)[case]
    out = tmp_path / "o.zarr"
    if case == "read-only dir":
        out = _readonly_dir(tmp_path) / "o.zarr"
    source, *extra = args
    assert _predict(source, model, out, *extra) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("gigaseg predict: error: ")
    assert message in err[0]
    assert not out.exists() or read_attrs(out).get("status") != "complete"


def test_existing_store_needs_overwrite_or_resume(tmp_path, model, image, capsys):
    out = tmp_path / "o.zarr"
    assert _predict(image, model, out) == 0
    run_id = read_attrs(out)["run_id"]
    capsys.readouterr()
    assert _predict(image, model, out) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already exists; use --overwrite" in err[0]
    assert read_attrs(out)["run_id"] == run_id  # untouched
    assert _predict(image, model, out, "--resume") == 0
    assert "0 tiles computed, 0 skipped, 4 already done" in capsys.readouterr().out
    assert _predict(image, model, out, "--overwrite", "--probabilities", "float32") == 0
    assert read_attrs(out)["probabilities_dtype"] == "float32"


def test_status_of_a_non_store(tmp_path, capsys):
    assert main(["status", str(tmp_path)]) == 1
    assert "is not a gigaseg store" in capsys.readouterr().err


def test_foreign_model_with_halo_and_classes(tmp_path, image, capsys):
    foreign = save_torchscript(TinyUNet(classes=2), tmp_path / "f.pt", metadata=False)
    out = tmp_path / "f.zarr"
    assert _predict(image, foreign, out) == 1
    assert "give --halo N" in capsys.readouterr().err
    assert _predict(image, foreign, out, "--halo", "28", "--classes", "bg,road") == 0
    assert read_attrs(out)["classes"] == ["bg", "road"]
    assert np.asarray(read_attrs(out)["shape"]).tolist() == [48, 60]
