"""The example workflows in workflows/examples run end to end on the bundled data.

As shipped they use the demo model (sample/model/buildings.safetensors); here tiny 1-band
U-Nets of the same alignment stand in (averaging weights, no training), with small tiles, so
the test is quick.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

import workflows
from tests.workflows.conftest import REPO, save_smooth_model

EXAMPLES = REPO / "workflows" / "examples"

pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """1-band stand-in models of the demo model's alignment (8), one per example's data."""
    folder = tmp_path_factory.mktemp("model")
    return {
        # bright roofs on the uint16 panchromatic chip
        "buildings": save_smooth_model(folder / "b.safetensors", mean=487, std=150, cut=1.0),
        # bright snow-free road/rock regions on the red band of the aerial COG
        "roads": save_smooth_model(folder / "r.safetensors", mean=128, std=50, cut=1.0),
        # tissue darker than the bright glass, green band of the H&E slide
        "slide-to-qupath": save_smooth_model(
            folder / "s.safetensors", mean=200, std=40, cut=0.3, invert=True
        ),
    }


def test_every_example_is_tested() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.yaml")) == [
        "buildings.yaml",
        "roads.yaml",
        "slide-to-qupath.yaml",
    ]


@pytest.mark.parametrize(
    ("name", "clusters"),
    [
        ("buildings", ["local", "slurm"]),
        ("roads", ["local", "pbs"]),
        ("slide-to-qupath", ["local"]),
    ],
)
def test_examples_validate_as_shipped(name: str, clusters: list[str], tmp_path: Path) -> None:
    # The shipped files, with the shipped demo model; only the output folder moves.
    for cluster in clusters:
        stream = io.StringIO()
        report = workflows.run(
            EXAMPLES / f"{name}.yaml",
            dry_run=True,
            cluster=cluster,
            overrides={"output": {"dir": str(tmp_path)}},
            stream=stream,
            environ={},
        )
        assert report.dry_run and report.scenes
        assert ("job script" in stream.getvalue()) == (cluster != "local")


def run_example(name: str, model: Path, out: Path, client: Any, tile: int) -> Any:
    overrides = {"model": str(model), "output": {"dir": str(out)}, "tiling": {"tile": tile}}
    stream = io.StringIO()
    report = workflows.run(
        EXAMPLES / f"{name}.yaml",
        overrides=overrides,
        client=client,
        progress=False,
        stream=stream,
        environ={},
    )
    assert report.ok, stream.getvalue()
    assert (out / "gigaseg-report.json").exists()
    assert "TOTAL" in stream.getvalue()
    return report


def test_buildings_example(models: dict[str, Path], tmp_path: Path, local_client: Any) -> None:
    report = run_example("buildings", models["buildings"], tmp_path, local_client, tile=256)
    (scene,) = report.scenes
    assert scene.tiles_total == 16  # 900 x 900 px in 256 px tiles
    features = json.loads((tmp_path / "sample_geotiff.geojson").read_text())
    assert features["type"] == "FeatureCollection"
    assert features["features"]
    lon, lat = features["features"][0]["geometry"]["coordinates"][0][0]
    assert -84.6 < lon < -84.3 and 33.6 < lat < 33.8  # Atlanta, in EPSG:4326
    assert (tmp_path / "sample_geotiff.parquet").stat().st_size > 0


def test_roads_example(models: dict[str, Path], tmp_path: Path, local_client: Any) -> None:
    report = run_example("roads", models["roads"], tmp_path, local_client, tile=256)
    assert report.scenes[0].tiles_total == 16
    data = json.loads((tmp_path / "cogeo-centerlines.geojson").read_text())
    kinds = {f["geometry"]["type"] for f in data["features"]}
    assert kinds <= {"LineString", "MultiLineString"} and kinds
    assert (tmp_path / "cogeo-centerlines.gpkg").stat().st_size > 0


@pytest.mark.timeout(400)
def test_slide_to_qupath_example(
    models: dict[str, Path], tmp_path: Path, local_client: Any
) -> None:
    report = run_example(
        "slide-to-qupath", models["slide-to-qupath"], tmp_path, local_client, tile=512
    )
    (scene,) = report.scenes
    assert scene.tiles_skipped > 0  # tiles without tissue are not computed
    assert scene.tiles_computed + scene.tiles_skipped == scene.tiles_total == 30
    data = json.loads((tmp_path / "CMU-1-Small-Region.qupath.geojson").read_text())
    features = data["features"] if isinstance(data, dict) else data
    assert features
    first = features[0]
    assert first["properties"]["objectType"] == "annotation"
    assert "classification" in first["properties"]
    x, y = first["geometry"]["coordinates"][0][0][:2]
    assert 0 <= x <= 2220 and 0 <= y <= 2967  # level-0 pixels
