"""``gigaseg run`` on a LocalCluster exits without warnings.

(``gigaseg predict --workers 2`` is checked the same way in ``tests/pipeline/test_runner.py``.)
The run is a real subprocess with a real two-worker LocalCluster; its stderr must hold no
"Worker process still alive ... killing", no Python warnings, no tracebacks and no Dask log
records: everything a user would see at exit besides the command's own summary.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.workflows.conftest import write_geotiff

ROOT = Path(__file__).parents[2]
#: What shutdown noise looks like (distributed's nanny/worker logs, warnings, tracebacks).
NOISE = ("still alive", "killing", "Warning", "warning", "Traceback", "ERROR", "distributed.")


def _gigaseg(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workflows", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _assert_quiet(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, done.stderr
    noise = [line for line in done.stderr.splitlines() if any(n in line for n in NOISE)]
    assert noise == [], done.stderr


@pytest.mark.timeout(900)
def test_run_with_a_local_cluster_exits_without_warnings(tmp_path: Path, tiny_model: Path):
    image = write_geotiff(tmp_path / "scene.tif", height=96, width=120)
    workflow = tmp_path / "wf.yaml"
    workflow.write_text(
        f"inputs: [{image}]\n"
        f"model: {tiny_model}\n"
        "tiling: {tile: 32}\n"
        f"output: {{dir: {tmp_path / 'out'}}}\n"
        "exports: [{path: '{dir}/{stem}.geojson'}]\n"
        "cluster: {type: local, local: {n_workers: 2, threads_per_worker: 1}}\n"
    )
    done = _gigaseg("run", str(workflow), "--no-progress", cwd=ROOT)
    _assert_quiet(done)
    assert (tmp_path / "out" / "scene.geojson").is_file()
