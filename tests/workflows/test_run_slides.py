"""Workflow keys for slides: per-input tissue file and source_mpp, stain, checked in the plan
and recorded in each store."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import zarr

import workflows
from pipeline.errors import ConfigError
from tests.pipeline.read.slides import brightfield, write_svs
from workflows.plan import make_plan
from workflows.spec import parse_workflow

pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
)


@pytest.fixture
def slide(tmp_path: Path) -> Path:
    image, _ = brightfield(200, 260, seed=7)
    return write_svs(tmp_path / "he.svs", image, levels=1, tile=64)


def _spec(model: Path, slide: Path, out: Path, **read: Any) -> dict[str, Any]:
    roi = slide.parent / "roi.geojson"
    polygon = [[0, 0], [90, 0], [90, 70], [0, 70], [0, 0]]
    feature = {
        "type": "Feature",
        "properties": {},
        "geometry": {"type": "Polygon", "coordinates": [polygon]},
    }
    roi.write_text(json.dumps([feature]))
    return {
        "inputs": [{"path": slide.name, "tissue": "roi.geojson", "source_mpp": 0.5}],
        "root": str(slide.parent),
        "model": str(model),
        "read": read,
        "tiling": {"tile": 64},
        "output": {"dir": str(out)},
    }


def test_slide_keys_reach_the_store(
    tiny_model: Path, slide: Path, tmp_path: Path, local_client: Any
) -> None:
    out = tmp_path / "out"
    spec = _spec(tiny_model, slide, out, stain="macenko")
    report = workflows.run(spec, client=local_client, progress=False, stream=io.StringIO())
    assert report.ok
    attrs = dict(zarr.open_group(str(out / "he.zarr"), mode="r").attrs)
    assert attrs["tissue"]["mode"] == "file"
    assert attrs["tissue"]["file"] == str(slide.parent / "roi.geojson")
    assert attrs["mpp"] == pytest.approx(0.5)  # source_mpp overrides the recorded 0.499
    assert attrs["stain"]["method"] == "macenko"
    ledger = zarr.open_array(str(out / "he.zarr" / "tiles"), mode="r")[...]
    assert (ledger == 2).any() and (ledger == 1).any()  # outside the annotation: skipped


def test_plan_names_a_missing_tissue_file_and_stain_target(
    tiny_model: Path, slide: Path, tmp_path: Path
) -> None:
    spec = _spec(tiny_model, slide, tmp_path / "out", stain="reinhard", stain_target="ref.png")
    spec["inputs"][0]["tissue"] = "nowhere.geojson"
    with pytest.raises(ConfigError) as info:
        make_plan(parse_workflow(spec))
    text = str(info.value)
    assert "inputs[0].tissue: 'nowhere.geojson' is neither one of auto, off" in text
    assert "read.stain_target: ref.png does not exist" in text


def test_stain_target_needs_a_stain(tiny_model: Path, slide: Path, tmp_path: Path) -> None:
    spec = _spec(tiny_model, slide, tmp_path / "out", stain_target="ref.png")
    with pytest.raises(ConfigError, match="stain_target needs stain: macenko or reinhard"):
        parse_workflow(spec)
