"""``workflows.run`` / ``gigaseg run`` end to end on tiny data: report, dry-run, resume."""

from __future__ import annotations

import importlib
import io
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import pipeline
import workflows
from pipeline.errors import ConfigError, InputError
from tests.workflows.conftest import read_store
from workflows.cli import main as cli
from workflows.run import store_status

# ``workflows.run`` is the function; the module (to patch) is reached through importlib.
RUN = importlib.import_module("workflows.run")

# distributed sometimes leaves a probe socket for the garbage collector; not ours to fix.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
)


@pytest.fixture
def two_scenes(geotiff_factory: Callable[..., Path]) -> list[Path]:
    return [
        geotiff_factory("a.tif", height=64, width=80, seed=1),
        geotiff_factory("b.tif", height=96, width=64, seed=2),
    ]


def workflow(model: Path, scenes: list[Path], out: Path, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "demo",
        "inputs": [str(scenes[0].parent / "*.tif")],
        "model": str(model),
        "tiling": {"tile": 32},
        "output": {"dir": str(out)},
        "exports": [{"path": "{dir}/{stem}.geojson"}],
    }
    spec.update(extra)
    return spec


def test_run_two_scenes_on_one_client(
    tiny_model: Path, two_scenes: list[Path], tmp_path: Path, local_client: Any
) -> None:
    out = tmp_path / "out"
    calls: list[dict[str, Any]] = []
    real_predict = pipeline.predict

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return real_predict(*args, **kwargs)

    stream = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline, "predict", spy)
        report = workflows.run(
            workflow(tiny_model, two_scenes, out),
            client=local_client,
            progress=False,
            stream=stream,
        )
    # Every scene went to the same client, with an on_tile callback for the shared bar.
    assert [c["client"] for c in calls] == [local_client, local_client]
    assert all(callable(c["on_tile"]) and c["resume"] is False for c in calls)
    assert report.ok
    assert [s.status for s in report.scenes] == ["complete", "complete"]
    assert [s.tiles_total for s in report.scenes] == [6, 6]
    assert sum(s.tiles_computed + s.tiles_skipped for s in report.scenes) == 12
    for scene in report.scenes:
        assert store_status(Path(scene.store)) == "complete"
        assert scene.stages["infer"] > 0 and scene.stages["vectorize"] > 0
        assert scene.megapixels == pytest.approx(64 * 80 / 1e6) or scene.megapixels == (
            pytest.approx(96 * 64 / 1e6)
        )
        assert scene.exports[0].status == "written"
        assert Path(scene.exports[0].path).exists()
    data = json.loads((out / "gigaseg-report.json").read_text())
    assert data["workflow"] == "demo"
    assert data["total"]["tiles"]["total"] == 12
    assert set(data["total"]["stages"]) == {"read", "infer", "write", "vectorize", "export"}
    assert data["scenes"][0]["outputs"]["store"] == str(out / "a.zarr")
    assert data["scenes"][0]["outputs"]["exports"][0]["path"] == str(out / "a.geojson")
    assert data["total"]["peak_worker_memory"] > 0
    table = stream.getvalue()
    assert "TOTAL" in table and "a.tif" in table and str(out / "b.geojson") in table
    assert table.splitlines()[0].split() == [
        "scene", "status", "tiles", "empty", "resumed",
        "read", "infer", "write", "vectorize", "export", "Mpx", "Mpx/s", "peak", "mem",
    ]  # fmt: skip

    # Resume: both scenes and exports are finished, so nothing runs and no cluster starts.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(RUN, "connect", _no_cluster)
        again = workflows.run(
            workflow(tiny_model, two_scenes, out), resume=True, progress=False, stream=stream
        )
    assert [s.status for s in again.scenes] == ["skipped (complete)"] * 2
    assert [s.exports[0].status for s in again.scenes] == ["skipped (up to date)"] * 2
    assert again.total()["tiles"]["computed"] == 0
    assert sum(s.tiles_resumed + s.tiles_skipped for s in again.scenes) == 12

    # A deleted export is redone on resume; the finished store is not recomputed.
    before = read_store(out / "a.zarr")
    (out / "a.geojson").unlink()
    third = workflows.run(
        workflow(tiny_model, two_scenes, out),
        resume=True,
        client=local_client,
        progress=False,
        stream=stream,
    )
    assert [e.status for s in third.scenes for e in s.exports] == [
        "written",
        "skipped (up to date)",
    ]
    assert third.scenes[0].status == "skipped (complete)"
    after = read_store(out / "a.zarr")
    np.testing.assert_array_equal(before[1], after[1])


def _no_cluster(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("no cluster should start")


def test_dry_run_plans_without_running(
    tiny_model: Path,
    two_scenes: list[Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    write_workflow: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(RUN, "connect", _no_cluster)
    spec = workflow(
        tiny_model,
        two_scenes,
        tmp_path / "out",
        cluster={"slurm": {"cores": 2, "memory": "4GB", "gpus": 1, "queue": "gpu"}},
    )
    path = write_workflow(spec)
    assert cli(["run", str(path), "--dry-run", "--cluster", "slurm", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "workflow demo" in text
    assert "tile 32, patch auto, halo auto, batch auto" in text
    assert "slurm: adaptive 0..1 jobs of 2 cores, 4GB, 1 worker(s), 1 GPUs" in text
    assert f"[0] {two_scenes[0]} (80x64 px, 6 tiles)" in text
    assert f"store  {tmp_path / 'out' / 'a.zarr'}" in text
    assert "job script (slurm, not submitted):" in text
    assert "#SBATCH --gres=gpu:1" in text and "#SBATCH -p gpu" in text
    assert "--resources GPU=1" in text
    assert not (tmp_path / "out").exists()
    report = workflows.run(path, dry_run=True, cluster="slurm", stream=io.StringIO())
    assert report.dry_run and report.job_script and "#SBATCH" in report.job_script
    assert [s.status for s in report.scenes] == ["planned", "planned"]
    # Local dry run: no job script.
    assert cli(["run", str(path), "--dry-run"]) == 0
    assert "job script" not in capsys.readouterr().out


def test_resume_and_overwrite_exclude_each_other(tiny_model: Path, two_scenes: list[Path]) -> None:
    with pytest.raises(ConfigError, match=r"--resume and --overwrite exclude each other"):
        workflows.run(workflow(tiny_model, two_scenes, Path("out")), resume=True, overwrite=True)


def test_a_failed_scene_is_reported_and_the_others_finish(
    tiny_model: Path, two_scenes: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_predict = pipeline.predict

    def flaky(source: str, *args: Any, **kwargs: Any) -> Any:
        if source.endswith("a.tif"):
            raise InputError(f"{source} is a corrupt or unreadable raster (test)")
        return real_predict(source, *args, **kwargs)

    monkeypatch.setattr(pipeline, "predict", flaky)
    out = tmp_path / "out"
    stream = io.StringIO()
    spec = workflow(tiny_model, two_scenes, out, exports=[], cluster={"local": {"n_workers": 1}})
    with pytest.raises(InputError, match=r"a\.tif is a corrupt or unreadable raster"):
        workflows.run(spec, progress=False, stream=stream)
    data = json.loads((out / "gigaseg-report.json").read_text())
    assert [s["status"] for s in data["scenes"]] == ["failed", "complete"]
    assert "corrupt" in data["scenes"][0]["error"]
    assert data["total"]["failed"] == 1
    assert "1/2 ok" in stream.getvalue()


def test_cli_run_through_a_scheduler_address(
    tiny_model: Path,
    two_scenes: list[Path],
    tmp_path: Path,
    local_client: Any,
    write_workflow: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_workflow(workflow(tiny_model, two_scenes, tmp_path / "out", exports=[]))
    address = local_client.scheduler.address
    code = cli(["run", str(path), "--cluster", address, "--set", "tiling.tile=64"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"on scheduler at {address}" in captured.out
    assert re.search(r"^TOTAL\s+2/2 ok\s+4/4 ", captured.out, re.MULTILINE)
    # The progress bar counts tiles over both scenes (2 + 2 tiles of 64 px).
    assert "2 scenes: 100%" in captured.err and "4/4" in captured.err and "Mpx/s" in captured.err
    # Running again without --resume refuses to touch the outputs.
    assert cli(["run", str(path), "--cluster", address]) == 1
    assert "pass --resume to continue the run or --overwrite" in capsys.readouterr().err
