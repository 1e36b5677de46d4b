"""The one runner: where tasks run, bounded in-flight work, identical stores on every path,
and a clean shutdown of the clusters it starts."""

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from pipeline.errors import ConfigError
from pipeline.predict import predict
from pipeline.runner import Runner, choose_mode, local_cluster, machine_size
from pipeline.settings import RunnerSettings, TilingSettings, split_options
from tests.pipeline.read.synthetic import write_geotiff
from tests.pipeline.tinynet import TinyUNet, save_torchscript

ROOT = Path(__file__).parents[2]

# distributed leaves an unbound socket to the garbage collector when a cluster closes
pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
)


def test_mode_rule():
    assert choose_mode(RunnerSettings(workers=0)) == "process"
    assert choose_mode(RunnerSettings(), tasks=1) == "process"  # one task: no cluster
    assert choose_mode(RunnerSettings(workers=2), tasks=1) == "cluster"  # asked for
    assert choose_mode(RunnerSettings(scheduler="tcp://127.0.0.1:1")) == "client"
    assert choose_mode(RunnerSettings(), client=object()) == "client"
    workers, _ = machine_size("model")
    expected = "process" if workers <= 1 else "cluster"
    assert choose_mode(RunnerSettings(), tasks=100) == expected


def test_settings_are_checked_and_frozen():
    with pytest.raises(ConfigError, match="workers -1 must be an integer >= 0"):
        RunnerSettings(workers=-1)
    with pytest.raises(ConfigError, match="patch 'big' must be auto or an integer"):
        TilingSettings(patch="big")
    with pytest.raises(ConfigError, match="did you mean 'workers'"):
        split_options({"worker": 2}, RunnerSettings())
    with pytest.raises(AttributeError):
        RunnerSettings().workers = 3  # type: ignore[misc]
    assert TilingSettings(patch="512").patch == 512


def test_in_process_map_is_bounded_and_complete():
    running = []
    peak = [0]
    lock = threading.Lock()

    def task(i):
        with lock:
            running.append(i)
            peak[0] = max(peak[0], len(running))
        time.sleep(0.01)
        with lock:
            running.remove(i)
        return i * i

    seen = []
    with Runner(RunnerSettings(workers=0)) as runner:
        out = sorted(
            runner.map(task, [(i,) for i in range(20)], progress=False, on_result=seen.append)
        )
    assert out == [i * i for i in range(20)] and sorted(seen) == out
    assert 1 <= peak[0] <= 2  # two threads: one task in the model, the next one reading


def test_in_process_task_error_propagates():
    def fail(i):
        raise ValueError(f"bad {i}")

    with Runner(RunnerSettings(workers=0)) as runner, pytest.raises(ValueError, match="bad"):
        list(runner.map(fail, [(1,), (2,)], progress=False))


def test_local_cluster_listens_on_loopback_only():
    from distributed import Client

    cluster = local_cluster(1, 1, dashboard_address=":0")
    try:
        with Client(cluster) as client:
            assert client.scheduler.address.startswith("tcp://127.0.0.1:")
            assert "127.0.0.1" in client.dashboard_link
            workers = client.scheduler_info()["workers"]
            assert all(address.startswith("tcp://127.0.0.1:") for address in workers)
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_torchscript(TinyUNet(seed=3), tmp_path_factory.mktemp("m") / "tiny.pt")


def _arrays(store):
    group = zarr.open_group(str(store), mode="r")
    return {name: group[name][...] for name in ("probabilities", "labels", "tiles")}


def test_in_process_and_cluster_paths_give_identical_stores(tmp_path, tiny_model):
    image = np.random.default_rng(1).integers(0, 256, (3, 90, 130)).astype(np.uint8)
    path = write_geotiff(tmp_path / "in.tif", image)
    options = {"tile": 32, "precision": "fp32", "probabilities": "float32", "progress": False}
    here = predict(path, tiny_model, tmp_path / "here.zarr", workers=0, **options)
    # One worker process gets this machine's cores as torch threads, as this process does, so
    # the float32 results are bit-identical (two workers of one thread differ by ~1e-7 from
    # the thread split of the reductions; test_predict checks those against the reference).
    there = predict(path, tiny_model, tmp_path / "there.zarr", workers=1, **options)
    assert (here.workers, there.workers) == (0, 1)
    assert here.tiles_computed == there.tiles_computed == 15
    a, b = _arrays(tmp_path / "here.zarr"), _arrays(tmp_path / "there.zarr")
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_cli_on_a_cluster_exits_without_warnings(tmp_path, tiny_model):
    image = np.random.default_rng(2).integers(0, 256, (3, 64, 64)).astype(np.uint8)
    path = write_geotiff(tmp_path / "in.tif", image)
    argv = [sys.executable, "-m", "workflows", "predict", str(path), "--model", str(tiny_model)]
    argv += ["--out", str(tmp_path / "o.zarr"), "--tile", "32", "--workers", "2"]
    done = subprocess.run(
        [*argv, "--no-progress"], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "4 tiles computed" in done.stdout
    assert done.stderr.strip() == "", done.stderr  # no "still alive ... killing", no warnings
