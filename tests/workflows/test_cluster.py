"""Clusters: rendered job scripts as text (as dask-jobqueue's own tests do), local, address."""

from __future__ import annotations

import sys
import time
from typing import Any

import pytest

from pipeline.errors import ConfigError
from workflows.cluster import connect, describe, job_script, jobqueue_kwargs, local_kwargs
from workflows.spec import Cluster, parse_workflow

PY = "/opt/env/bin/python"


def cluster(**settings: Any) -> Cluster:
    data = {"inputs": ["a.tif"], "model": "m.safetensors", "cluster": settings}
    return parse_workflow(data).cluster


def test_slurm_job_script_with_gpus() -> None:
    c = cluster(
        type="slurm",
        slurm={
            "queue": "gpu",
            "account": "proj42",
            "walltime": "02:30:00",
            "cores": 8,
            "memory": "32GB",
            "gpus": 2,
            "python": PY,
            "prologue": ["module load cuda/12", "source /opt/env/bin/activate"],
            "directives": ["--constraint=a100"],
            "interface": "ib0",
            "log_directory": "/scratch/logs",
        },
    )
    script = job_script(c, name="buildings")
    lines = script.splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    for directive in (
        "#SBATCH -J buildings",
        "#SBATCH -p gpu",
        "#SBATCH -A proj42",
        "#SBATCH -n 1",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=30G",
        "#SBATCH -t 02:30:00",
        "#SBATCH --constraint=a100",
        "#SBATCH --gres=gpu:2",
        "#SBATCH -e /scratch/logs/buildings-%J.err",
    ):
        assert directive in lines, directive
    assert lines.index("module load cuda/12") < lines.index("source /opt/env/bin/activate")
    command = lines[-1]
    assert command.startswith(f"{PY} -m distributed.cli.dask_worker tcp://SCHEDULER:8786 ")
    assert "--nworkers 2" in command  # one worker per GPU
    assert "--nthreads 4" in command
    assert "--resources GPU=1" in command
    assert "--interface ib0" in command
    assert "--memory-limit 14.90GiB" in command


def test_slurm_job_script_without_gpus_has_no_gres() -> None:
    c = cluster(type="slurm", slurm={"cores": 2, "memory": "4GB", "python": PY})
    script = job_script(c)
    assert "--gres" not in script
    assert "--resources" not in script
    assert "#SBATCH -t 01:00:00" in script  # the shipped default walltime
    assert "#SBATCH -A" not in script and "#SBATCH -p" not in script


def test_pbs_job_script_with_gpus() -> None:
    c = cluster(
        type="pbs",
        pbs={
            "queue": "workq",
            "account": "proj42",
            "cores": 8,
            "memory": "32GB",
            "gpus": 4,
            "processes": 2,
            "python": PY,
            "prologue": ["module load cuda"],
        },
    )
    lines = job_script(c, name="slides").splitlines()
    assert "#PBS -N slides" in lines
    assert "#PBS -q workq" in lines
    assert "#PBS -A proj42" in lines
    assert "#PBS -l select=1:ncpus=8:mem=30GB:ngpus=4" in lines
    assert "#PBS -l walltime=01:00:00" in lines
    assert "module load cuda" in lines
    assert "--nworkers 2" in lines[-1]
    assert "--resources GPU=2" in lines[-1]  # 4 GPUs over 2 workers


def test_pbs_job_script_without_gpus_uses_the_default_select() -> None:
    script = job_script(cluster(type="pbs", pbs={"cores": 4, "memory": "8GB", "python": PY}))
    assert "#PBS -l select=1:ncpus=4:mem=7630MB" in script  # dask-jobqueue rounds
    assert "ngpus" not in script


def test_job_script_only_for_batch_clusters() -> None:
    with pytest.raises(ConfigError, match=r"cluster\.type is local; only slurm and pbs"):
        job_script(cluster())
    with pytest.raises(ConfigError, match=r"cluster\.slurm: cores and memory are required"):
        jobqueue_kwargs("slurm", cluster().slurm)


def test_python_defaults_to_this_interpreter() -> None:
    kwargs = jobqueue_kwargs("slurm", cluster(slurm={"cores": 1, "memory": "1GB"}).slurm)
    assert kwargs["python"] == sys.executable


def test_describe() -> None:
    assert describe(cluster()).startswith("local: LocalCluster, auto workers x auto threads")
    text = describe(
        cluster(
            type="slurm",
            slurm={"cores": 4, "memory": "8GB", "gpus": 1, "max_jobs": 3, "queue": "gpu"},
        )
    )
    assert text == (
        "slurm: adaptive 0..3 jobs of 4 cores, 8GB, 1 worker(s), 1 GPUs, walltime 01:00:00, "
        "queue gpu"
    )
    assert describe(cluster(type="address", address="tcp://10.0.0.1:8786")) == (
        "scheduler at tcp://10.0.0.1:8786"
    )


def test_local_cluster_settings_reach_the_one_builder() -> None:
    # pipeline.runner.local_cluster builds every LocalCluster (loopback; tested there).
    kwargs = local_kwargs(cluster(local={"n_workers": 2, "threads_per_worker": 1}))
    assert kwargs["dashboard_address"] == "127.0.0.1:0"
    assert (kwargs["n_workers"], kwargs["threads_per_worker"]) == (2, 1)
    assert local_kwargs(cluster())["n_workers"] is None  # the runner's sizing rule decides


def test_connect_local_and_address() -> None:
    settings = cluster(local={"n_workers": 1, "threads_per_worker": 1, "memory_limit": "1GiB"})
    with connect(settings) as client:
        assert client.submit(sum, [1, 2, 3]).result(timeout=60) == 6
        address = client.scheduler.address
        assert address.startswith("tcp://127.0.0.1:")
        # A second client through the "address" type reaches the same scheduler.
        with connect(cluster(type="address", address=address)) as other:
            assert other.submit(sum, [4, 5]).result(timeout=60) == 9
            assert other.scheduler.address == address


def _where() -> str:
    import os
    import socket

    return f"{socket.gethostname()} job={os.environ.get('SLURM_JOB_ID')}"


@pytest.mark.slurm
@pytest.mark.timeout(240)
def test_real_slurm_cluster_runs_a_gpu_task() -> None:
    import subprocess

    settings = cluster(
        type="slurm",
        slurm={
            "cores": 1,
            "memory": "1GB",
            "gpus": 1,
            "walltime": "00:10:00",
            "interface": "lo",
            "min_jobs": 1,
            "max_jobs": 1,
            "python": sys.executable,
        },
    )
    start = time.perf_counter()
    with connect(settings, name="gigaseg-test") as client:
        client.wait_for_workers(1, timeout=180)
        where = client.submit(_where, resources={"GPU": 1}, pure=False).result(timeout=120)
        assert "job=" in where and "job=None" not in where
        queue = subprocess.run(
            ["squeue", "-h", "-n", "gigaseg-test"], capture_output=True, text=True, check=True
        )
        assert queue.stdout.strip(), "the worker should run as a SLURM job named gigaseg-test"
    assert time.perf_counter() - start < 200
