"""One run on a real distributed LocalCluster: same output as the in-process path.

The cluster is the one the runner starts (``workers=2``: :func:`pipeline.runner.local_cluster`,
closed by :func:`pipeline.runner.close_cluster`), so this tests that path as users get it.
"""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from pipeline.vectorize import vectorize

from .helpers import assert_same, blobs, read_parquet, write_geotiff


@pytest.mark.timeout(180)
# distributed can drop an unbound probe socket on shutdown; collected below, inside this test
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_local_cluster_equals_whole_raster_trace(tmp_path: Path) -> None:
    labels = blobs((96, 80), seed=11, classes=2)
    tif = write_geotiff(tmp_path / "labels.tif", labels, crs=None)
    report = vectorize(tif, tmp_path / "out.parquet", chunk=24, workers=2, progress=False)
    gc.collect()
    assert report.workers == 2
    assert report.chunks == 16 and report.border_pieces > 0
    assert_same(labels, read_parquet(tmp_path / "out.parquet"), 4)
