"""gigaseg vectorize / preview end to end, and one-line errors with exit status 1."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine

from workflows.cli import main


def _tif(path: Path, data: np.ndarray) -> Path:
    bands = data[None] if data.ndim == 2 else data
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=bands.shape[2],
        height=bands.shape[1],
        count=bands.shape[0],
        dtype=bands.dtype,
        crs="EPSG:32616",
        transform=Affine(0.5, 0, 733601.0, 0, -0.5, 3725139.0),
    ) as ds:
        ds.write(bands)
    return path


@pytest.fixture
def labels(tmp_path: Path) -> Path:
    data = np.zeros((64, 64), np.uint8)
    data[5:20, 5:40] = 1
    data[30:60, 30:34] = 1
    data[40:44, 2:6] = 1  # 16 px = 4 m²
    return _tif(tmp_path / "labels.tif", data)


def test_vectorize_command_writes_every_format(
    labels: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ["a.geojson", "a.geojsons", "a.parquet", "a.gpkg", "a.fgb", "a.qupath.geojson"]:
        code = main(
            [
                "vectorize",
                str(labels),
                "--out",
                str(tmp_path / name),
                "--chunk",
                "16",
                "--workers",
                "0",
                "--no-progress",
                "--min-area",
                "5",
            ]
        )
        assert code == 0
        assert (tmp_path / name).exists()
    out = capsys.readouterr().out
    assert "2 features (class_1 2)" in out
    data = json.loads((tmp_path / "a.geojson").read_text())
    assert len(data["features"]) == 2


def test_vectorize_report_json(labels: Path, tmp_path: Path) -> None:
    code = main(
        [
            "vectorize",
            str(labels),
            "--out",
            str(tmp_path / "a.geojson"),
            "--workers",
            "0",
            "--no-progress",
            "--report",
            str(tmp_path / "r.json"),
            "--connectivity",
            "8",
        ]
    )
    assert code == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["features"] == 3 and report["connectivity"] == 8


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--out", "{tmp}/o.shp"], "cannot tell the output format from 'o.shp'; pass --format"),
        (
            ["--out", "{tmp}/o.json", "--format", "kml"],
            "unknown output format 'kml'; choose one of",
        ),
        (["--out", "{tmp}/missing/o.geojson"], "directory {tmp}/missing does not exist"),
        (["--out", "{tmp}/o.geojson", "--class", "road"], "class 'road' is not in"),
    ],
)
def test_vectorize_errors_are_one_line(
    labels: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    args = [a.format(tmp=tmp_path) for a in argv]
    code = main(["vectorize", str(labels), *args, "--workers", "0", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("gigaseg vectorize: error: ")
    assert message.format(tmp=tmp_path) in err


def test_vectorize_multiband_and_float_inputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rgb = _tif(tmp_path / "rgb.tif", np.zeros((3, 8, 8), np.uint8))
    assert main(["vectorize", str(rgb), "--out", str(tmp_path / "o.geojson")]) == 1
    assert "has 3 bands; vectorize needs a single-band" in capsys.readouterr().err
    prob = _tif(tmp_path / "p.tif", np.zeros((8, 8), np.float32))
    assert main(["vectorize", str(prob), "--out", str(tmp_path / "o.geojson")]) == 1
    assert "pass --threshold" in capsys.readouterr().err
    assert (
        main(
            [
                "vectorize",
                str(prob),
                "--out",
                str(tmp_path / "o.geojson"),
                "--threshold",
                "0.5",
                "--workers",
                "0",
                "--no-progress",
            ]
        )
        == 0
    )


def test_preview_command(labels: Path, tmp_path: Path) -> None:
    assert (
        main(
            [
                "vectorize",
                str(labels),
                "--out",
                str(tmp_path / "a.geojson"),
                "--workers",
                "0",
                "--no-progress",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "preview",
                str(labels),
                "--vectors",
                str(tmp_path / "a.geojson"),
                "--out",
                str(tmp_path / "p.png"),
                "--size",
                "128",
            ]
        )
        == 0
    )
    assert (tmp_path / "p.png").stat().st_size > 0
