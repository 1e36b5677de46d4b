"""A workflow through a real SLURM (``.ci/slurm-up.sh``) gives the same outputs as locally.

Marked ``slurm``: skipped where ``sinfo`` is absent or no node is idle. Workers start as
SLURM jobs (adaptive, 1..2 jobs, one fake GPU each via ``--gres``) using this interpreter on
the loopback interface, as CLUSTER.md describes.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

import workflows
from tests.workflows.conftest import read_features, read_store
from workflows.cli import main as cli

pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
)


@pytest.mark.slurm
@pytest.mark.timeout(480)
def test_workflow_on_slurm_equals_local(
    tiny_model: Path,
    geotiff_factory: Callable[..., Path],
    tmp_path: Path,
    local_client: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    geotiff_factory("a.tif", height=96, width=128, seed=7)
    geotiff_factory("b.tif", height=64, width=64, seed=8)
    logs = tmp_path / "slurm-logs"
    spec: dict[str, Any] = {
        "name": "slurm-test",
        "inputs": [str(tmp_path / "data" / "*.tif")],
        "model": str(tiny_model),
        "tiling": {"tile": 32},
        "exports": [{"path": "{dir}/{stem}.geojson"}],
        "cluster": {
            "slurm": {
                "cores": 1,
                "memory": "2GB",
                "gpus": 1,
                "walltime": "00:15:00",
                "python": sys.executable,
                "interface": "lo",
                "min_jobs": 1,
                "max_jobs": 2,
                "log_directory": str(logs),
            }
        },
    }
    local = workflows.run(
        {**spec, "output": {"dir": str(tmp_path / "local")}},
        client=local_client,
        progress=False,
        stream=io.StringIO(),
    )
    assert local.ok

    path = tmp_path / "workflow.yaml"
    path.write_text(yaml.safe_dump({**spec, "output": {"dir": str(tmp_path / "slurm")}}))
    code = cli(["run", str(path), "--cluster", "slurm", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "on slurm: adaptive 1..2 jobs of 1 cores, 2GB, 1 worker(s), 1 GPUs" in captured.out
    # The workers really were SLURM jobs: each wrote its logs through sbatch.
    assert list(logs.glob("slurm-test-*.err")), "no SLURM job logs"
    accounting = subprocess.run(
        ["squeue", "-h", "-n", "slurm-test", "-t", "PD,R"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert accounting.stdout.strip() == "", "jobs must be cancelled (or completing) at the end"

    report = json.loads((tmp_path / "slurm" / "gigaseg-report.json").read_text())
    assert [s["status"] for s in report["scenes"]] == ["complete", "complete"]
    for name in ("a", "b"):
        probs_local, labels_local = read_store(tmp_path / "local" / f"{name}.zarr")
        probs_slurm, labels_slurm = read_store(tmp_path / "slurm" / f"{name}.zarr")
        np.testing.assert_array_equal(probs_local, probs_slurm)
        np.testing.assert_array_equal(labels_local, labels_slurm)
        assert read_features(tmp_path / "local" / f"{name}.geojson") == read_features(
            tmp_path / "slurm" / f"{name}.geojson"
        )
