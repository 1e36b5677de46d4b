"""Fault tolerance: a worker killed mid-run, and a whole run killed then resumed.

Both must give exactly the result of an uninterrupted run: tile tasks read their own windows
and write only their own chunks, so a recomputed tile is idempotent, and the ledger lets a
resumed run compute only tiles that were not marked done.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import yaml

import workflows
from pipeline.errors import StaleLockWarning
from pipeline.runner import environ_kept
from pipeline.store.lock import lock_path
from tests.workflows.conftest import ledger, read_features, read_store
from workflows.exports import record_path
from workflows.run import store_status

pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def done_tiles(store: Path) -> int:
    return int((ledger(store) == 1).sum())


def assert_same_store(a: Path, b: Path) -> None:
    probs_a, labels_a = read_store(a)
    probs_b, labels_b = read_store(b)
    np.testing.assert_array_equal(probs_a, probs_b)
    np.testing.assert_array_equal(labels_a, labels_b)
    assert labels_a.any() and not labels_a.all()  # the comparison is not vacuous


def spec(model: Path, inputs: list[Path], out: Path, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "inputs": [str(p) for p in inputs],
        "model": str(model),
        "tiling": {"tile": 32},
        "output": {"dir": str(out)},
        "exports": [{"path": "{dir}/{stem}.geojson"}],
        "cluster": {"local": {"n_workers": 2, "threads_per_worker": 1, "memory_limit": "2GiB"}},
    }
    data.update(extra)
    return data


@pytest.mark.timeout(300)
def test_a_killed_worker_does_not_change_the_result(
    tiny_model: Path, geotiff_factory: Callable[..., Path], tmp_path: Path, local_client: Any
) -> None:
    from distributed import Client, LocalCluster

    scene = geotiff_factory("big.tif", height=256, width=256, seed=5)
    reference = workflows.run(
        spec(tiny_model, [scene], tmp_path / "ref"),
        client=local_client,
        progress=False,
        stream=io.StringIO(),
    )
    assert reference.ok
    store = tmp_path / "killed" / "big.zarr"
    outcome: dict[str, Any] = {}

    with (
        environ_kept(),  # the nannies write their workers' settings into os.environ
        LocalCluster(
            n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        before = client.run(os.getpid)
        victim = psutil.Process(next(iter(before.values())))

        def target() -> None:
            try:
                outcome["report"] = workflows.run(
                    spec(tiny_model, [scene], tmp_path / "killed"),
                    client=client,
                    progress=False,
                    stream=io.StringIO(),
                )
            except BaseException as exc:  # surfaced by the assertions below
                outcome["error"] = exc

        thread = threading.Thread(target=target)
        thread.start()
        wait_for(lambda: done_tiles(store) >= 5, 120, "the first tiles")
        total = ledger(store).size
        assert done_tiles(store) < total, "the run finished before the worker could be killed"
        victim.kill()
        thread.join(timeout=240)
        assert not thread.is_alive()
        assert "error" not in outcome, outcome.get("error")
        # The nanny replaced the killed worker process.
        after = client.run(os.getpid)
        assert victim.pid not in after.values()

    report = outcome["report"]
    assert report.ok and store_status(store) == "complete"
    assert_same_store(tmp_path / "ref" / "big.zarr", store)
    assert read_features(tmp_path / "ref" / "big.geojson") == read_features(
        tmp_path / "killed" / "big.geojson"
    )


@pytest.mark.timeout(300)
def test_a_killed_run_resumes_to_the_uninterrupted_result(
    tiny_model: Path, geotiff_factory: Callable[..., Path], tmp_path: Path, local_client: Any
) -> None:
    small = geotiff_factory("small.tif", height=64, width=64, seed=3)
    big = geotiff_factory("big.tif", height=448, width=448, seed=4)
    reference = workflows.run(
        spec(tiny_model, [small, big], tmp_path / "ref"),
        client=local_client,
        progress=False,
        stream=io.StringIO(),
    )
    assert reference.ok

    out = tmp_path / "run"
    path = tmp_path / "workflow.yaml"
    path.write_text(yaml.safe_dump(spec(tiny_model, [small, big], out)))
    command = [sys.executable, "-m", "workflows", "run", str(path), "--no-progress"]
    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: workers die with it
    )
    try:
        # Kill once the small scene and its export are finished (file, record and lock
        # released: a kill between them would leave the export half-finished, which is
        # another test) and the big one is under way.
        small_export = out / "small.geojson"
        wait_for(
            lambda: (
                (
                    small_export.exists()
                    and record_path(small_export).exists()
                    and not lock_path(small_export).exists()
                    and done_tiles(out / "big.zarr") >= 5
                )
                or process.poll() is not None
            ),
            180,
            "the small scene to finish and the big one to start",
        )
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        if process.stderr:
            process.stderr.close()
    interrupted = ledger(out / "big.zarr")
    assert 0 < (interrupted == 1).sum() < interrupted.size
    assert store_status(out / "big.zarr") != "complete"
    assert not (out / "big.geojson").exists()
    assert not (out / "gigaseg-report.json").exists()

    stream = io.StringIO()
    with pytest.warns(StaleLockWarning, match=r"big\.zarr from run .* no longer running"):
        resumed = workflows.run(
            path, resume=True, client=local_client, progress=False, stream=stream
        )
    assert resumed.ok
    small_report, big_report = resumed.scenes
    # The finished scene and its export are skipped, not redone.
    assert small_report.status == "skipped (complete)"
    assert small_report.exports[0].status == "skipped (up to date)"
    assert small_report.tiles_computed == 0
    # Only the unfinished tiles of the big scene are computed.
    assert big_report.status == "complete"
    assert big_report.tiles_resumed == int((interrupted == 1).sum())
    assert big_report.tiles_computed == interrupted.size - big_report.tiles_resumed - (
        big_report.tiles_skipped
    )
    assert big_report.exports[0].status == "written"
    for name in ("small", "big"):
        assert_same_store(tmp_path / "ref" / f"{name}.zarr", out / f"{name}.zarr")
        assert read_features(tmp_path / "ref" / f"{name}.geojson") == read_features(
            out / f"{name}.geojson"
        )
    assert "skipped (complete)" in stream.getvalue()
