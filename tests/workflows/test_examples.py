"""The example workflows in workflows/examples run end to end on the bundled data.

As shipped they use the demo model (sample/model/buildings.safetensors); here a random-weight
tiny 1-band U-Net of the same alignment stands in, with small tiles, so the test is quick.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

import workflows
from tests.workflows.conftest import REPO, save_tiny_model

EXAMPLES = REPO / "workflows" / "examples"

pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
)


@pytest.fixture(scope="module")
def one_band_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random 1-band U-Net of depth 3 (alignment 8, like the demo model)."""
    path = tmp_path_factory.mktemp("model") / "one-band.safetensors"
    return save_tiny_model(path, in_channels=1, depth=3)


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


def run_example(name: str, model: Path, out: Path, client: Any, tile: int, threshold: float) -> Any:
    # A random model labels large noisy regions, whose clean-up (holes, regularisation) is
    # slow; a high threshold (about the 95th percentile of its output on each example's
    # data) keeps its labels sparse, like real objects.
    overrides = {
        "model": str(model),
        "output": {"dir": str(out)},
        "tiling": {"tile": tile},
        "inference": {"threshold": threshold},
    }
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


def test_buildings_example(one_band_model: Path, tmp_path: Path, local_client: Any) -> None:
    report = run_example(
        "buildings", one_band_model, tmp_path, local_client, tile=256, threshold=0.9
    )
    (scene,) = report.scenes
    assert scene.tiles_total == 16  # 900 x 900 px in 256 px tiles
    features = json.loads((tmp_path / "sample_geotiff.geojson").read_text())
    assert features["type"] == "FeatureCollection"
    assert features["features"], "a random model still labels something on a real scene"
    lon, lat = features["features"][0]["geometry"]["coordinates"][0][0]
    assert -84.6 < lon < -84.3 and 33.6 < lat < 33.8  # Atlanta, in EPSG:4326
    assert (tmp_path / "sample_geotiff.parquet").stat().st_size > 0


def test_roads_example(one_band_model: Path, tmp_path: Path, local_client: Any) -> None:
    report = run_example("roads", one_band_model, tmp_path, local_client, tile=256, threshold=0.58)
    assert report.scenes[0].tiles_total == 16
    data = json.loads((tmp_path / "cogeo-centerlines.geojson").read_text())
    kinds = {f["geometry"]["type"] for f in data["features"]}
    assert kinds <= {"LineString", "MultiLineString"} and kinds
    assert (tmp_path / "cogeo-centerlines.gpkg").stat().st_size > 0


@pytest.mark.timeout(400)
def test_slide_to_qupath_example(one_band_model: Path, tmp_path: Path, local_client: Any) -> None:
    report = run_example(
        "slide-to-qupath", one_band_model, tmp_path, local_client, tile=512, threshold=0.6
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
