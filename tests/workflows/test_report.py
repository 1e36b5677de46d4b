"""Run report (JSON + table) and the progress bar across scenes."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from workflows.progress import MemoryMonitor, RunProgress
from workflows.report import (
    ExportRecord,
    RunReport,
    SceneReport,
    format_bytes,
    stage_seconds,
    tile_counts,
    vectorize_seconds,
)


def make_report(tmp_path: Path) -> RunReport:
    a = SceneReport(input="/data/a.tif", store="/out/a.zarr", status="complete")
    a.stages.update(read=1.0, infer=4.0, write=0.5, vectorize=2.0, export=0.25)
    a.tiles_computed, a.tiles_skipped, a.tiles_total = 10, 2, 12
    a.megapixels, a.megapixels_computed, a.predict_seconds = 3.0, 2.5, 5.0
    a.peak_worker_memory = 3 * 2**30
    a.exports = [ExportRecord("/out/a.geojson", "geojson", "written", 2.3)]
    b = SceneReport(input="/data/b.tif", store="/out/b.zarr", status="skipped (complete)")
    b.tiles_resumed, b.tiles_total, b.megapixels = 4, 4, 1.0
    return RunReport(
        workflow="demo",
        cluster="local: LocalCluster",
        model={"path": "m.safetensors", "sha256": "ab"},
        report_path=str(tmp_path / "report.json"),
        scenes=[a, b],
        seconds=10.0,
    )


def test_totals_and_json(tmp_path: Path) -> None:
    report = make_report(tmp_path)
    total = report.total()
    assert total["tiles"] == {"computed": 10, "skipped": 2, "resumed": 4, "total": 16}
    assert total["stages"]["infer"] == 4.0
    assert total["megapixels"] == 4.0
    assert total["mpx_per_s"] == 0.25  # computed megapixels over the run's wall time
    assert total["peak_worker_memory"] == 3 * 2**30
    assert report.scenes[0].mpx_per_s == 0.5
    path = report.write()
    data = json.loads(path.read_text())
    assert data["scenes"][0]["outputs"]["exports"][0]["status"] == "written"
    assert data["scenes"][1]["status"] == "skipped (complete)"
    assert data["total"] == json.loads(json.dumps(total))
    assert not list(tmp_path.glob(".*.tmp"))


def test_table(tmp_path: Path) -> None:
    lines = make_report(tmp_path).table().splitlines()
    assert lines[0].split()[:5] == ["scene", "status", "tiles", "empty", "resumed"]
    row = lines[2].split()
    assert row[:5] == ["a.tif", "complete", "10/12", "2", "0"]
    assert row[5:10] == ["1.00s", "4.00s", "0.50s", "2.00s", "0.25s"]
    assert row[-2:] == ["3.0", "GiB"]
    total = next(line for line in lines if line.startswith("TOTAL")).split()
    assert total[:6] == ["TOTAL", "2/2", "ok", "10/16", "2", "4"]
    assert "  a.tif: /out/a.zarr" in lines
    assert any(line.strip() == "/out/a.geojson (geojson, written)" for line in lines)
    assert lines[-1] == f"report: {tmp_path / 'report.json'}"


def test_stage_report_parsing() -> None:
    predict = {
        "tiles_total": 9,
        "tiles_computed": 5,
        "tiles_skipped": 1,
        "tiles_already_done": 3,
        "seconds": {"read": 0.5, "infer": 2.0, "write": 0.25, "total": 3.0},
    }
    assert tile_counts(predict) == (5, 1, 3, 9)
    assert stage_seconds(predict, ["read", "infer", "write", "total"]) == {
        "read": 0.5,
        "infer": 2.0,
        "write": 0.25,
        "total": 3.0,
    }
    assert stage_seconds({"read_seconds": 1}, ["read", "write"]) == {"read": 1.0, "write": 0.0}
    assert vectorize_seconds({"seconds": {"total": 3.0, "close": 1.0}}, 9.0) == {
        "vectorize": 2.0,
        "export": 1.0,
    }
    assert vectorize_seconds({}, 9.0) == {"vectorize": 9.0, "export": 0.0}
    assert format_bytes(None) == "-" and format_bytes(512) == "512 B"


def test_progress_counts_tiles_over_scenes_from_threads() -> None:
    progress = RunProgress([(10, 1.0), (None, None), (4, 0.4)], enabled=True)
    assert progress.total == 14
    threads = [
        threading.Thread(target=lambda i=i: [progress.update(i, d, 8) for d in range(1, 9)])
        for i in (0, 1)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    progress.finish_scene(2)
    assert progress.done == 8 + 8 + 4
    assert progress.total == 8 + 8 + 4  # predict's totals replace the planned estimates
    assert progress.megapixels_done() == pytest.approx(1.0 + 0.4)
    progress.close()


class FakeClient:
    def __init__(self) -> None:
        self.memory = [100, 300, 200]

    def scheduler_info(self) -> dict[str, Any]:
        value = self.memory.pop(0) if self.memory else 50
        return {"workers": {"a": {"metrics": {"memory": value}}, "b": {"metrics": {}}}}


def test_memory_monitor_keeps_the_peak() -> None:
    with MemoryMonitor(FakeClient(), interval=0.01) as monitor:
        monitor.sample()
        monitor.sample()
    assert monitor.peak() == 300
    assert monitor.peak(start=float("inf")) is None
