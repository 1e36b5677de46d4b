"""Cluster faults that need no batch scheduler: job scripts, worker lifetimes, GPU binding.

- A failing prologue line (``module load`` of a missing module) fails the job: the job script
  runs ``set -e`` before the prologue.
- Workers retire before the walltime kills their job (``--lifetime`` + ``--lifetime-stagger``
  derived from the walltime), so a fresh job takes over instead of tiles dying mid-task.
- A job or machine with N GPUs binds one GPU per worker process (worker rank i -> GPU i), shown
  by construction on CPU: real Dask workers started with the binding preload each see their
  own ``CUDA_VISIBLE_DEVICES``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import ClusterError, ConfigError
from pipeline.infer.gpus import ENV_PROCESSES, devices_for, worker_rank
from pipeline.runner import environ_kept
from tests.workflows.conftest import ledger, tiny_model, write_geotiff  # noqa: F401
from workflows.cluster import job_script
from workflows.jobs import lifetime_args, lifetime_seconds, parse_walltime, submit_message
from workflows.spec import Cluster, parse_workflow


def _cluster(**slurm: object) -> Cluster:
    settings = {"cores": 4, "memory": "8GB", "python": "/env/bin/python", **slurm}
    data = {"inputs": ["a.tif"], "model": "m.safetensors"}
    return parse_workflow({**data, "cluster": {"type": "slurm", "slurm": settings}}).cluster


def test_job_script_fails_on_a_failing_prologue_line() -> None:
    lines = job_script(_cluster(prologue=["module load cuda/12", "source env.sh"])).splitlines()
    assert lines.index("set -e") < lines.index("module load cuda/12") < lines.index("source env.sh")
    assert not any(line.startswith("#SBATCH") for line in lines[lines.index("set -e") :])
    assert lines[-1].startswith("/env/bin/python -m distributed.cli.dask_worker")


def test_job_script_retires_workers_before_the_walltime() -> None:
    command = job_script(_cluster(walltime="02:00:00")).splitlines()[-1]
    # 2 h: margin 12 min, stagger 6 min -> the last worker leaves by 1 h 48 min.
    assert "--lifetime 6120s --lifetime-stagger 360s" in command
    assert "--lifetime-restart" not in command  # the job ends; a fresh one takes over
    explicit = job_script(_cluster(walltime="02:00:00", lifetime="50m")).splitlines()[-1]
    assert "--lifetime 3000s --lifetime-stagger 150s" in explicit
    assert "--lifetime" not in job_script(_cluster(lifetime=None))


@pytest.mark.parametrize("walltime", ["5", "00:01:00", "00:10:00", "01:00:00", "2-00:00:00"])
def test_auto_lifetime_always_leaves_time_to_hand_over(walltime: str) -> None:
    wall = parse_walltime(walltime)
    times = lifetime_seconds(walltime)
    assert times is not None
    life, stagger = times
    assert life > 0 and stagger >= 0
    assert life + stagger <= 0.9 * wall  # at least 10 % of the walltime left to drain
    assert life >= 0.6 * wall  # but most of it used


def test_walltime_forms() -> None:
    assert parse_walltime("45") == 45 * 60
    assert parse_walltime("45:30") == 45 * 60 + 30
    assert parse_walltime("1-12") == 36 * 3600
    assert parse_walltime("1-12:30:15") == 36 * 3600 + 30 * 60 + 15
    with pytest.raises(ClusterError, match=r"walltime 'soon' is not \[D-\]HH:MM:SS"):
        parse_walltime("soon")
    assert lifetime_args("01:00:00", None) == []


def test_bad_lifetime_is_a_config_error_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"cluster\.slurm\.lifetime.*duration like 50m"):
        _cluster(lifetime="whenever")


def test_submit_error_keeps_the_schedulers_words() -> None:
    raw = (
        "Command exited with non-zero exit code.\nExit code: 1\nCommand:\nsbatch /tmp/x.sh\n"
        "stdout:\n\nstderr:\nsbatch: error: invalid partition specified: gpu\n"
        "sbatch: error: Batch job submission failed: Invalid partition name specified\n\n"
    )
    assert submit_message(raw) == (
        "sbatch: error: invalid partition specified: gpu; "
        "sbatch: error: Batch job submission failed: Invalid partition name specified"
    )


def test_gpu_job_script_binds_one_gpu_per_worker() -> None:
    lines = job_script(_cluster(gpus=4, processes=2)).splitlines()
    assert f"export {ENV_PROCESSES}=2" in lines
    assert lines.index("set -e") < lines.index(f"export {ENV_PROCESSES}=2")
    command = lines[-1]
    assert "--resources GPU=2" in command
    assert "--preload pipeline.infer.gpus" in command
    assert "--preload" not in job_script(_cluster())  # no GPUs, nothing to bind


@pytest.mark.parametrize(
    ("names", "processes", "per_worker", "visible", "expected"),
    [
        (["job-0-0", "job-0-1"], 2, 1, None, ["0", "1"]),
        (["job-7-0", "job-7-1"], 2, 1, "2,3", ["2", "3"]),  # SLURM's own list
        (["job-0-0", "job-0-1"], 2, 2, "0,1,2,3", ["0,1", "2,3"]),
        (["job-5"], 1, 1, "6", ["6"]),
        ([0, 1, 2, 3], 4, 1, None, ["0", "1", "2", "3"]),  # LocalCluster names
    ],
)
def test_worker_rank_maps_to_its_own_gpu(
    names: list[object], processes: int, per_worker: int, visible: str | None, expected: list[str]
) -> None:
    got = [devices_for(worker_rank(n, processes), per_worker, visible) for n in names]
    assert got == expected
    assert len(set(got)) == len(got)  # no two workers share a device


def test_too_few_visible_gpus_is_reported() -> None:
    with pytest.raises(ConfigError, match=r"worker rank 1 needs 1 GPU\(s\).*=0;"):
        devices_for(1, 1, "0")
    with pytest.raises(ConfigError, match="has no rank suffix"):
        worker_rank("scheduler", 2)


def _bound_devices(dask_worker: Any) -> tuple[Any, str | None]:
    """On a worker: its name and the GPUs it may use."""
    return dask_worker.name, os.environ.get("CUDA_VISIBLE_DEVICES")


@pytest.mark.timeout(120)
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
)
def test_dask_workers_each_bind_their_own_gpu() -> None:
    """Real worker processes started with the preload see one device each (no GPU needed)."""
    from distributed import Client, LocalCluster

    with (
        environ_kept(),  # the nannies write their workers' settings into os.environ
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            resources={"GPU": 1},
            preload=["pipeline.infer.gpus"],
            env={ENV_PROCESSES: "2"},
        ) as cluster,
        Client(cluster) as client,
    ):
        seen = client.run(_bound_devices)
    by_name = dict(seen.values())
    assert by_name == {0: "0", 1: "1"}


@pytest.mark.timeout(240)
def test_ctrl_c_during_predict_on_workers_is_one_line_and_marks_the_store(
    tmp_path: Path,
    tiny_model: Path,  # noqa: F811
) -> None:
    """Ctrl-C reaches the whole process group: no worker traceback, exit 130, store says so."""
    source = write_geotiff(tmp_path / "big.tif", height=1024, width=1024)
    store = tmp_path / "out.zarr"
    command = [sys.executable, "-m", "workflows", "predict", str(source)]
    command += ["--model", str(tiny_model), "--out", str(store), "--tile", "32"]
    command += ["--workers", "2", "--no-progress", "--precision", "fp32"]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    try:
        deadline = time.monotonic() + 180
        while not (ledger(store) == 1).any():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.2)
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, err
    assert err.strip().splitlines() == ["gigaseg: interrupted"], err
    attrs = json.loads((store / "zarr.json").read_text())["attributes"]
    assert attrs["status"] == "interrupted"
    assert not (ledger(store) == 1).all()  # really stopped early


def test_tls_job_script_and_missing_certificates(tmp_path: Path) -> None:
    for name in ("ca.pem", "node.pem", "node.key"):
        (tmp_path / name).write_text("-----BEGIN CERTIFICATE-----\n")
    files = {
        "tls_ca_file": str(tmp_path / "ca.pem"),
        "tls_cert": str(tmp_path / "node.pem"),
        "tls_key": str(tmp_path / "node.key"),
    }
    command = job_script(_cluster(security=files, interface="ib0")).splitlines()[-1]
    assert f"--tls-ca-file {tmp_path / 'ca.pem'}" in command
    assert f"--tls-cert {tmp_path / 'node.pem'}" in command
    assert f"--tls-key {tmp_path / 'node.key'}" in command
    assert "--interface ib0" in command
    logs = tmp_path / "logs"
    shown = job_script(_cluster(security="temporary", log_directory=str(logs)))
    assert f"--tls-ca-file {logs / 'gigaseg-tls-RUN.ca.pem'}" in shown
    assert not list(logs.glob("*.pem"))  # a dry run writes no key
    with pytest.raises(ConfigError, match=r"security\.tls_key .*missing\.key does not exist"):
        job_script(_cluster(security={**files, "tls_key": str(tmp_path / "missing.key")}))


@pytest.mark.parametrize(
    ("address", "said"),
    [
        ("foo", "missing port number"),
        ("tcp://host:notaport", "invalid literal"),
        ("tcp:/x:1", "invalid address"),
    ],
)
def test_malformed_scheduler_address_is_one_line(
    tmp_path: Path,
    tiny_model: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    address: str,
    said: str,
) -> None:
    from workflows.cli import main as cli

    source = write_geotiff(tmp_path / "a.tif", height=64, width=64)
    store = tmp_path / "out.zarr"
    command = ["predict", str(source), "--model", str(tiny_model), "--out", str(store)]
    code = cli([*command, "--scheduler", address])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1, err
    assert f"scheduler address {address!r} is malformed ({said}" in err
    assert "give tcp://HOST:PORT" in err
    assert not store.exists()


@pytest.mark.timeout(120)
def test_unreachable_scheduler_writes_no_store(
    tmp_path: Path,
    tiny_model: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Nothing is created before the scheduler answers, so a rerun is not refused."""
    import socket

    from workflows.cli import main as cli

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    source = write_geotiff(tmp_path / "a.tif", height=64, width=64)
    store = tmp_path / "out.zarr"
    command = ["predict", str(source), "--model", str(tiny_model), "--out", str(store)]
    code = cli([*command, "--scheduler", f"tcp://127.0.0.1:{port}"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1, err
    assert f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port} (" in err
    assert not store.exists()
    assert cli([*command, "--workers", "0", "--no-progress", "--precision", "fp32"]) == 0


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 256 KiB file system (tmpfs), so writes fail with ENOSPC; needs root."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.timeout(240)
def test_disk_full_with_workers_is_one_line_naming_the_store(
    tmp_path: Path,
    tiny_model: Path,  # noqa: F811
    full_disk: Path,
) -> None:
    source = write_geotiff(tmp_path / "a.tif", height=512, width=512)
    store = full_disk / "out.zarr"
    command = [sys.executable, "-m", "workflows", "predict", str(source)]
    command += ["--model", str(tiny_model), "--out", str(store), "--tile", "64"]
    command += ["--workers", "2", "--no-progress", "--probabilities", "float32"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=200, check=False)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("gigaseg predict: error: ")
    assert str(store) in lines[0]
    assert ": No space left on device; free space there" in lines[0]
    assert lines[0].endswith("rerun with --resume")
    attrs = json.loads((store / "zarr.json").read_text())["attributes"]
    assert attrs["status"] != "complete"


def _outside_address() -> str | None:
    """One of this machine's non-loopback IPv4 addresses, if it has any."""
    import socket

    import psutil  # a dependency of distributed

    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET and not address.address.startswith("127."):
                return str(address.address)
    return None


@pytest.mark.timeout(120)
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
)
def test_predict_cluster_listens_on_loopback_only() -> None:
    """The dashboard, scheduler and workers of ``gigaseg predict --workers N`` are local."""
    import socket
    from urllib.parse import urlparse

    from distributed import Client

    from pipeline.runner import close_cluster, local_cluster

    outside = _outside_address()
    if outside is None:
        pytest.skip("no non-loopback interface to probe from")
    cluster = local_cluster(1, 1, kind="python")
    client = Client(cluster)
    try:
        dashboard = urlparse(cluster.dashboard_link)
        ports = [dashboard.port, int(cluster.scheduler_address.rsplit(":", 1)[1])]
        ports += [int(a.rsplit(":", 1)[1]) for a in client.scheduler_info()["workers"]]
        assert dashboard.hostname == "127.0.0.1"
        for port in ports:
            with socket.socket() as attempt:
                attempt.settimeout(3)
                assert attempt.connect_ex(("127.0.0.1", port)) == 0  # it does listen...
            with socket.socket() as attempt:
                attempt.settimeout(3)
                assert attempt.connect_ex((outside, port)) != 0, port  # ...but not outside
    finally:
        close_cluster(client, cluster)
