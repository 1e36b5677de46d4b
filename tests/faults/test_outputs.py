"""Outputs: collisions, outputs that would destroy inputs, reports, leftover temporary files.

Nothing is lost: an output that is (or holds) an input is refused before anything is deleted;
two scenes whose templates name one file -- however it is spelled (``..``, symlinks) -- are
refused at plan time naming both inputs; ``--report FILE`` is an output like the others (not
replaced without ``--overwrite``, checked for writability before the run, written under a
temporary name); a temporary export left by a killed run is removed by the next run.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

import pipeline
import workflows
from pipeline.errors import ConfigError
from tests.workflows.conftest import synthetic
from workflows.cli import main as cli
from workflows.run import plan

# A LocalCluster's sockets are sometimes collected late (as in tests/workflows/test_fault.py).
pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
)


def spec(model: Path, *inputs: Any, **extra: Any) -> dict[str, Any]:
    return {"inputs": [str(p) for p in inputs], "model": str(model), **extra}


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


# ------------------------------------------------------------------------------------------
# Collisions (issue 13 item 12 and the "same input named twice" message)


def test_templates_with_dotdot_that_name_one_file_collide_at_plan_time(
    tiny_model: Path, geotiff_factory: Callable[..., Path], tmp_path: Path
) -> None:
    one = geotiff_factory("x/scene.tif")
    two = geotiff_factory("y/scene.tif")
    # out/x/../scene.zarr and out/y/../scene.zarr differ as text, but are one folder.
    wf = spec(
        tiny_model,
        one,
        two,
        output={"dir": str(tmp_path / "out"), "store": "{dir}/{parent}/../{stem}.zarr"},
    )
    with pytest.raises(ConfigError) as caught:
        plan(wf, environ={})
    message = str(caught.value)
    assert "both write" in message and "out/scene.zarr" in message
    assert "x/scene.tif" in message and "y/scene.tif" in message


def test_a_glob_collision_names_two_different_inputs(
    tiny_model: Path, geotiff_factory: Callable[..., Path], tmp_path: Path
) -> None:
    geotiff_factory("x/scene.tif")
    geotiff_factory("y/scene.tif")
    wf = spec(tiny_model, tmp_path / "data" / "*" / "scene.tif")
    with pytest.raises(ConfigError) as caught:
        plan(wf, environ={})
    message = str(caught.value)
    # Both scenes come from inputs[0]: the message must still tell them apart.
    assert message.count("x/scene.tif") == 1 and message.count("y/scene.tif") == 1, message


def test_the_cli_reports_a_glob_collision_in_one_line_naming_both_inputs(
    tiny_model: Path,
    geotiff_factory: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    geotiff_factory("x/scene.tif")
    geotiff_factory("y/scene.tif")
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump(spec(tiny_model, tmp_path / "data" / "*" / "scene.tif")))
    assert cli(["run", str(path), "--dry-run"]) == 1
    line = one_error_line(capsys)
    assert line.count("x/scene.tif") == 1 and line.count("y/scene.tif") == 1, line


def test_the_cli_reports_a_dotdot_collision_in_one_line(
    tiny_model: Path,
    geotiff_factory: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    one = geotiff_factory("x/scene.tif")
    two = geotiff_factory("y/scene.tif")
    path = tmp_path / "wf.yaml"
    store = "{dir}/{parent}/../{stem}.zarr"
    out = {"dir": str(tmp_path / "out"), "store": store}
    path.write_text(yaml.safe_dump(spec(tiny_model, one, two, output=out)))
    assert cli(["run", str(path), "--dry-run"]) == 1
    assert "both write" in one_error_line(capsys)


# ------------------------------------------------------------------------------------------
# Outputs that are or hold an input (item 10)


def write_zarr_image(path: Path) -> np.ndarray:
    import zarr

    data = synthetic(48, 60, 3, seed=2).astype(np.uint8)
    array = zarr.create_array(str(path), shape=data.shape, chunks=(3, 16, 16), dtype="uint8")
    array[...] = data
    return data


def read_zarr(path: Path) -> np.ndarray:
    import zarr

    return np.asarray(zarr.open_array(str(path), mode="r")[...])


def test_predict_refuses_to_overwrite_its_own_input_store(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "src.zarr"
    data = write_zarr_image(source)
    argv = ["predict", str(source), "--model", str(tiny_model), "--out", str(source)]
    assert cli([*argv, "--overwrite", "--tile", "32", "--workers", "0", "--no-progress"]) == 1
    assert "would destroy the input" in one_error_line(capsys)
    np.testing.assert_array_equal(read_zarr(source), data)


def test_predict_refuses_an_output_that_holds_its_input(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "scene.zarr"
    data = write_zarr_image(folder / "image")
    spelled = tmp_path / "other" / ".." / "scene.zarr"
    argv = ["predict", str(folder / "image"), "--model", str(tiny_model), "--out", str(spelled)]
    assert cli([*argv, "--overwrite", "--tile", "32", "--workers", "0", "--no-progress"]) == 1
    assert "holds the input" in one_error_line(capsys)
    np.testing.assert_array_equal(read_zarr(folder / "image"), data)


def test_vectorize_refuses_to_write_over_its_input(
    tmp_path: Path, geotiff_factory: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    labels = geotiff_factory("labels.tif", bands=1)
    before = labels.read_bytes()
    argv = ["vectorize", str(labels), "--out", str(labels), "--format", "geojson"]
    assert cli([*argv, "--overwrite"]) == 1
    assert "would destroy the input" in one_error_line(capsys)
    assert labels.read_bytes() == before


def test_a_workflow_store_that_would_delete_the_input_folder_is_refused(
    tiny_model: Path, geotiff_factory: Callable[..., Path], tmp_path: Path
) -> None:
    scene = geotiff_factory("scene.tif")
    wf = spec(tiny_model, scene, output={"store": str(scene.parent)})
    with pytest.raises(ConfigError, match=r"would delete the folder holding input inputs\[0\]"):
        plan(wf, environ={}, overwrite=True)


# ------------------------------------------------------------------------------------------
# --report FILE (item 13, and the read-only folder message)


def test_predict_report_is_not_overwritten_without_overwrite(
    tiny_model: Path,
    geotiff_factory: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    scene = geotiff_factory("scene.tif")
    report = tmp_path / "notes.json"
    report.write_text("my notes\n")
    store = tmp_path / "scene.zarr"
    argv = ["predict", str(scene), "--model", str(tiny_model), "--out", str(store)]
    argv += ["--tile", "32", "--workers", "0", "--no-progress", "--report", str(report)]
    assert cli(argv) == 1
    assert "notes.json already exists; pass --overwrite" in one_error_line(capsys)
    assert report.read_text() == "my notes\n"
    assert not store.exists()  # refused before any work
    # With --overwrite both are replaced.
    assert cli([*argv, "--overwrite"]) == 0
    assert json.loads(report.read_text())["status"] == "complete"


def test_vectorize_report_is_not_overwritten_without_overwrite(
    tmp_path: Path, geotiff_factory: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    labels = geotiff_factory("labels.tif", bands=1)
    report = tmp_path / "notes.json"
    report.write_text("my notes\n")
    out = tmp_path / "out.geojson"
    assert cli(["vectorize", str(labels), "--out", str(out), "--report", str(report)]) == 1
    assert "notes.json already exists" in one_error_line(capsys)
    assert report.read_text() == "my notes\n" and not out.exists()


def read_only_folder(tmp_path: Path) -> Path:
    """A folder this process cannot write in (root ignores modes: use a read-only mount)."""
    if os.geteuid() != 0:
        folder = tmp_path / "locked"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    for candidate in (Path("/proc/sys"), Path("/sys/kernel")):
        if candidate.is_dir() and not os.access(candidate, os.W_OK):
            return candidate
    pytest.skip("no folder here is read-only for root")


def test_vectorize_report_in_a_read_only_folder_fails_before_writing(
    tmp_path: Path, geotiff_factory: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    labels = geotiff_factory("labels.tif", bands=1)
    report = read_only_folder(tmp_path) / "report.json"
    out = tmp_path / "out.geojson"
    assert cli(["vectorize", str(labels), "--out", str(out), "--report", str(report)]) == 1
    assert "is not writable" in one_error_line(capsys)
    assert not out.exists()  # checked before the run, not after it


# ------------------------------------------------------------------------------------------
# --chunk 0


def test_vectorize_chunk_zero_is_refused(
    tmp_path: Path, geotiff_factory: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    labels = geotiff_factory("labels.tif", bands=1)
    with pytest.raises(ConfigError, match=r"chunk must be a positive number of pixels, got 0"):
        pipeline.vectorize(str(labels), str(tmp_path / "a.geojson"), chunk=0, workers=0)
    out = tmp_path / "b.geojson"
    assert cli(["vectorize", str(labels), "--out", str(out), "--chunk", "0"]) == 1
    assert "chunk must be a positive" in one_error_line(capsys)


# ------------------------------------------------------------------------------------------
# Temporary files of killed runs


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.timeout(300)
def test_resume_removes_the_temporary_export_of_a_killed_run(
    tiny_model: Path, geotiff_factory: Callable[..., Path], tmp_path: Path, local_client: Any
) -> None:
    scene = geotiff_factory("scene.tif")
    out = tmp_path / "out"
    wf = spec(
        tiny_model,
        scene,
        tiling={"tile": 32},
        output={"dir": str(out)},
        exports=[{"path": "{dir}/{stem}.geojson"}],
    )
    first = workflows.run(wf, client=local_client, progress=False, stream=io.StringIO())
    assert first.ok
    export = out / "scene.geojson"
    # What a run killed while rewriting the export leaves, and one a live writer is using.
    stale = out / f".scene.tmp-{dead_pid()}-0123abcd.geojson"
    stale.write_text('{"type": "FeatureCollection", "features": [')
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        live = out / f".scene.tmp-{sleeper.pid}-4567cdef.geojson"
        live.write_text("")
        again = workflows.run(
            wf, client=local_client, progress=False, stream=io.StringIO(), resume=True
        )
        assert again.ok
        assert not stale.exists()
        assert live.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert export.is_file()
    assert json.loads(export.read_text())["type"] == "FeatureCollection"
