"""Runs that meet at one output: locked, written aside, swapped in only when complete.

- Two plain runs into one new store could both "succeed", each writing over the other. Now
  the first holds a lock beside the store for its whole run; a second run (plain,
  ``--overwrite`` or ``--resume``) fails at once with one line naming the store and the
  holder's run id, host and pid. A lock whose holder was killed is taken over, with a warning.
- ``--overwrite`` deleted the old store before the new run could even start its cluster, so
  a failed overwrite left nothing. Now it writes aside (``.<name>.tmp-<run id>``) and swaps
  the new store in only when complete: a failed or killed overwrite leaves the old store
  byte-identical; the next run that claims the store (``--resume``) removes what a killed
  run left, and finishes (or undoes) a swap cut between its two renames.
- The same lock guards ``vectorize`` outputs and the stores of ``gigaseg run`` workflows.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import workflows
from pipeline.errors import GigasegWarning, ModelOutputError, OutputBusyError, StaleLockWarning
from pipeline.predict import predict
from pipeline.store import read_attrs, set_status
from pipeline.store.claim import aside_path, claim_store
from pipeline.store.lock import LockHolder, acquire, lock_output, lock_path
from tests.workflows.conftest import read_store, write_geotiff
from workflows.cli import main as cli

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
)
KWARGS: dict[str, Any] = {"tile": 32, "workers": 0, "progress": False, "precision": "fp32"}


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    return err[0]


def snapshot(store: Path) -> dict[str, bytes]:
    """Every file of a store, by relative path: equal snapshots mean byte-identical stores."""
    return {
        p.relative_to(store).as_posix(): p.read_bytes() for p in store.rglob("*") if p.is_file()
    }


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    return write_geotiff(tmp_path / "scene.tif", height=256, width=256, seed=5)


@pytest.fixture
def nan_model(tmp_path: Path, tiny_model: Path) -> Path:
    """The tiny model with one NaN weight: its first tile fails, after the store is made."""
    import torch

    import unet

    model, meta = unet.load(tiny_model)
    with torch.no_grad():
        model.head.weight[0, 0, 0, 0] = float("nan")
    out = tmp_path / "nan.safetensors"
    unet.save(
        model,
        out,
        classes=list(meta.classes),
        bands=list(meta.bands or ()),
        mean=list(meta.mean),
        std=list(meta.std),
        pixel_size=meta.pixel_size,
    )
    return out


def _cli_predict(scene: Path, model: Path, store: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "workflows", "predict", str(scene), "--model", str(model),
            "--out", str(store), "--tile", "32", "--workers", "0", "--no-progress",
            "--precision", "fp32", *extra]  # fmt: skip


@pytest.fixture
def held_run(scene: Path, tiny_model: Path, tmp_path: Path) -> Iterator[tuple[Any, Path]]:
    """A real ``gigaseg predict`` process, stopped (SIGSTOP) while it holds its store's lock."""
    store = tmp_path / "race.zarr"
    process = subprocess.Popen(_cli_predict(scene, tiny_model, store), cwd=REPO,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            lock = lock_path(store)
            holder = LockHolder.parse(lock.read_text()) if lock.exists() else None
            if holder is not None and holder.pid == process.pid:
                break
            time.sleep(0.01)
        assert process.poll() is None, process.communicate()[1]
        os.kill(process.pid, signal.SIGSTOP)
        yield process, store
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)
            process.kill()
        process.communicate()  # closes the pipe


@pytest.mark.timeout(300)
def test_two_predict_processes_into_one_new_store_do_not_both_succeed(
    held_run: tuple[Any, Path], scene: Path, tiny_model: Path
) -> None:
    first, store = held_run
    holder = LockHolder.parse(lock_path(store).read_text())
    assert holder is not None
    for mode in ([], ["--overwrite"], ["--resume"]):
        argv = _cli_predict(scene, tiny_model, store, *mode)
        second = subprocess.run(
            argv, cwd=REPO, capture_output=True, text=True, timeout=240, check=False
        )
        err = [line for line in second.stderr.splitlines() if line.strip()]
        assert second.returncode == 1, (mode, second.stderr)
        assert len(err) == 1, err
        assert f"{store} is being written by run {holder.run_id}" in err[0], err
        assert f"host {socket.gethostname()}, pid {first.pid}" in err[0], err
    os.kill(first.pid, signal.SIGCONT)  # the first run finishes, untouched by the others
    _, stderr = first.communicate(timeout=240)
    assert first.returncode == 0, stderr
    attrs = read_attrs(store)
    assert attrs["status"] == "complete" and attrs["run_id"] == holder.run_id
    assert not lock_path(store).exists()
    expected = store.with_name("alone.zarr")
    predict(scene, tiny_model, expected, **KWARGS)
    np.testing.assert_array_equal(read_store(store)[0], read_store(expected)[0])


@pytest.mark.timeout(300)
@pytest.mark.filterwarnings("default::pipeline.errors.StaleLockWarning")
def test_a_killed_runs_lock_is_taken_over_with_a_warning(
    held_run: tuple[Any, Path], scene: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, store = held_run
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert lock_path(store).exists()  # what a killed run leaves
    assert cli(["predict", str(scene), "--model", str(tiny_model), "--out", str(store),
                "--tile", "32", "--workers", "0", "--no-progress", "--precision", "fp32",
                "--resume"]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert f"took over the lock of {store} from run" in err, err
    assert f"pid {first.pid}" in err and "no longer running" in err, err
    assert read_attrs(store)["status"] == "complete"
    assert not lock_path(store).exists()


def test_a_lock_record_of_a_dead_process_is_stale(tmp_path: Path) -> None:
    out = tmp_path / "scene.zarr"
    dead = LockHolder("0123abcd", socket.gethostname(), dead_pid(), "2026-01-01T00:00:00+00:00")
    lock_path(out).write_text(dead.to_json())
    with pytest.warns(StaleLockWarning, match=rf"run 0123abcd .*pid {dead.pid}.*no longer running"):
        held = acquire(out, "fresh")
    try:
        assert LockHolder.parse(lock_path(out).read_text()).run_id == "fresh"  # type: ignore[union-attr]
        with pytest.raises(OutputBusyError, match=r"being written by run fresh"):
            acquire(out, "third")  # a second open file description: flock refuses it
    finally:
        held.release()
    assert not lock_path(out).exists()


def test_a_failed_overwrite_keeps_the_old_store_byte_identical(
    scene: Path, tiny_model: Path, nan_model: Path, tmp_path: Path
) -> None:
    store = tmp_path / "scene.zarr"
    predict(scene, tiny_model, store, **KWARGS)
    before = snapshot(store)
    with pytest.raises(ModelOutputError, match="non-finite"):
        predict(scene, nan_model, store, overwrite=True, **KWARGS)  # fails on its first tile
    assert snapshot(store) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.mark.timeout(300)
@pytest.mark.filterwarnings("default::pipeline.store.claim.AsideWarning")
@pytest.mark.filterwarnings("default::pipeline.errors.StaleLockWarning")
def test_a_killed_overwrite_keeps_the_old_store_and_resume_removes_its_aside(
    scene: Path, tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "scene.zarr"
    predict(scene, tiny_model, store, **KWARGS)
    before = snapshot(store)
    process = subprocess.Popen(_cli_predict(scene, tiny_model, store, "--overwrite"), cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        asides: list[Path] = []
        while time.monotonic() < deadline and process.poll() is None:
            asides = [p for p in tmp_path.glob(".scene.zarr.tmp-*") if (p / "tiles").exists()]
            if asides:
                break
            time.sleep(0.01)
        assert process.poll() is None, "the overwrite finished before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    assert asides and asides[0].exists()  # the killed run's new store, never swapped in
    assert snapshot(store) == before  # the old one, untouched
    assert cli(["predict", str(scene), "--model", str(tiny_model), "--out", str(store),
                "--tile", "32", "--workers", "0", "--no-progress", "--precision", "fp32",
                "--resume"]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert f"removed {asides[0].name}" in err and "killed while overwriting" in err, err
    assert not asides[0].exists()
    assert {k: v for k, v in snapshot(store).items() if k != "zarr.json"} == {
        k: v for k, v in before.items() if k != "zarr.json"
    }


def _store(path: Path, scene: Path, model: Path) -> Path:
    predict(scene, model, path, **KWARGS)
    return path


@pytest.mark.parametrize("new_complete", [True, False])
def test_a_swap_cut_between_its_renames_is_finished_or_undone(
    scene: Path, tiny_model: Path, tmp_path: Path, new_complete: bool
) -> None:
    store = _store(tmp_path / "scene.zarr", scene, tiny_model)
    old_run = read_attrs(store)["run_id"]
    new = _store(aside_path(store, "cut"), scene, tiny_model)
    if not new_complete:
        set_status(new, "running")
    store.rename(aside_path(store, "cut", "old"))  # killed here: no store under its name
    warned = pytest.warns(GigasegWarning, match="swap|restored")
    with warned, claim_store(store, "next", resume=True) as claim:
        assert claim.path == store
    attrs = read_attrs(store)
    assert attrs["status"] == "complete"
    assert (attrs["run_id"] != old_run) is new_complete  # the new store in, or the old back
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".scene")] == []


def test_vectorize_into_an_output_another_run_writes_fails_at_once(
    geotiff_factory: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labels = geotiff_factory("labels.tif", bands=1)
    out = tmp_path / "out.geojson"
    with lock_output(out, "busy0001"):
        started = time.perf_counter()
        assert cli(["vectorize", str(labels), "--out", str(out), "--workers", "0"]) == 1
        line = one_error_line(capsys)
        assert time.perf_counter() - started < 30
    assert f"{out} is being written by run busy0001 (host {socket.gethostname()}" in line
    assert not out.exists()
    assert cli(["vectorize", str(labels), "--out", str(out), "--workers", "0"]) == 0
    assert json.loads(out.read_text())["type"] == "FeatureCollection"
    assert not lock_path(out).exists()


def test_a_workflow_scene_whose_store_another_run_writes_fails_naming_it(
    scene: Path, tiny_model: Path, tmp_path: Path, local_client: Any
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    wf = {
        "inputs": [str(scene)],
        "model": str(tiny_model),
        "tiling": {"tile": 32},
        "inference": {"precision": "fp32"},
        "output": {"dir": str(out)},
    }
    busy = pytest.raises(OutputBusyError, match=r"scene\.zarr is being written by run busy0002")
    with lock_output(out / "scene.zarr", "busy0002"), busy:
        workflows.run(wf, client=local_client, progress=False, stream=io.StringIO())
    saved = json.loads((out / "gigaseg-report.json").read_text())
    (record,) = saved["scenes"]
    assert record["status"] == "failed"
    assert "scene.zarr is being written by run busy0002" in record["error"], record
    assert not (out / "scene.zarr").exists()
