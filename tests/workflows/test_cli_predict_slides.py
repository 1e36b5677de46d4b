"""``gigaseg predict`` slide options: what was chosen is said on stderr; bad values are one
line, exit 1, and no store is created; ``gigaseg info`` lists the pyramid."""

import json

import numpy as np
import pytest
from PIL import Image

from pipeline.store import read_attrs
from tests.pipeline.read.slides import brightfield, write_svs
from tests.pipeline.tinynet import TinyUNet, save_torchscript
from workflows.cli import main


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("m")
    return save_torchscript(TinyUNet(seed=0), folder / "tiny.pt", pixel_size=1.0)


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    image, _ = brightfield(301, 403, seed=8)
    return write_svs(tmp_path_factory.mktemp("s") / "he.svs", image, levels=2, tile=64)


def _predict(source, model, out, *extra):
    argv = ["predict", str(source), "--model", str(model), "--out", str(out)]
    return main([*argv, "--tile", "64", "--workers", "0", "--no-progress", *extra])


def test_choices_are_said_and_recorded(tmp_path, model, slide, capsys):
    out = tmp_path / "s.zarr"
    assert _predict(slide, model, out, "--stain", "macenko", "--precision", "fp32") == 0
    err = capsys.readouterr().err
    assert "gigaseg predict: model pixel size 1 µm: reading" in err and "at level 1" in err
    assert "gigaseg predict: tissue mask: brightfield (from pixels" in err
    assert "gigaseg predict: stain: macenko fitted" in err
    attrs = read_attrs(out)
    assert attrs["level"] == 1 and attrs["stain"]["method"] == "macenko"
    assert attrs["tissue"]["polarity"] == "brightfield" and attrs["notes"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--tissue", "bright"], "--tissue 'bright' is neither one of auto, off, brightfield"),
        (["--stain", "reinhard"], "--stain reinhard needs a target"),
        (["--stain-target", "x.png"], "--stain-target needs --stain macenko or reinhard"),
        (["--source-mpp", "-2"], "source_mpp -2.0 must be > 0"),
        (["--level", "5"], "level 5 is not available"),
    ],
)
def test_bad_slide_options(tmp_path, model, slide, capsys, extra, message):
    out = tmp_path / "bad.zarr"
    assert _predict(slide, model, out, *extra) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_info_lists_levels(slide, capsys):
    assert main(["info", str(slide)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["backend"] == "tiffslide" and info["level_native"] is True
    assert [lv["dimensions"] for lv in info["levels"]] == [[403, 301], [201, 150]]
    assert info["levels"][1]["downsample"] == [301 / 150, 403 / 201]


@pytest.mark.parametrize(
    ("stain", "fix"), [("macenko", "use --stain reinhard or none"), ("reinhard", "--stain none")]
)
def test_stain_on_a_slide_without_tissue_is_one_line(tmp_path, model, capsys, stain, fix):
    glass = write_svs(tmp_path / "glass.svs", np.full((120, 160, 3), 238, np.uint8), levels=1)
    target = tmp_path / "ref.png"
    Image.fromarray(brightfield(64, 64, seed=1)[0]).save(target)
    out = tmp_path / "g.zarr"
    assert _predict(glass, model, out, "--stain", stain, "--stain-target", str(target)) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(glass) in err and "too few" in err and fix in err
    assert not out.exists()
