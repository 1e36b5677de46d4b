"""A GeoTIFF reader's memory does not grow with the image: GDAL's block cache is bounded."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import rasterio

from pipeline.read.geotiff import BLOCK_CACHE_MB
from tests.pipeline.read.synthetic import CRS, TRANSFORM

READ_ALL = textwrap.dedent(
    """
    import sys
    from pipeline.read import open_source
    from pipeline.tile import Window

    def rss_mb():  # resident now (a high-water mark would hide growth under import peaks)
        with open("/proc/self/status") as status:
            line = next(ln for ln in status if ln.startswith("VmRSS:"))
        return int(line.split()[1]) // 1024

    source = open_source(sys.argv[1])
    source.read(Window(0, 0, 1024, 1024))
    before = rss_mb()
    rows, cols = source.shape
    for r in range(0, rows, 1024):
        for c in range(0, cols, 1024):
            source.read(Window(r, c, min(1024, rows - r), min(1024, cols - c)))
    from rasterio.env import get_gdal_config
    print(get_gdal_config("GDAL_CACHEMAX"), rss_mb() - before)
    """
)


def _growth_mb(path, cachemax=None):
    env = {k: v for k, v in os.environ.items() if k != "GDAL_CACHEMAX"}
    if cachemax is not None:
        env["GDAL_CACHEMAX"] = str(cachemax)
    out = subprocess.run(
        [sys.executable, "-c", READ_ALL, str(path)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    cache_bytes, growth = out.stdout.split()[-2:]
    return int(cache_bytes), int(growth)


def test_reading_a_whole_large_geotiff_holds_at_most_the_bounded_cache(tmp_path):
    size = 12288  # 144 MB of pixels: more than twice the bound
    path = tmp_path / "big.tif"
    profile = dict(driver="GTiff", width=size, height=size, count=1, dtype="uint8")
    profile.update(tiled=True, blockxsize=512, blockysize=512, crs=CRS, transform=TRANSFORM)
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", **profile) as dataset:
        for row in range(0, size, 2048):
            dataset.write(
                rng.integers(0, 256, (1, 2048, size), dtype=np.uint8),
                window=((row, row + 2048), (0, size)),
            )
    cache, bounded = _growth_mb(path)
    user_cache, unbounded = _growth_mb(path, cachemax=1024)  # the user's own setting is kept
    assert cache == BLOCK_CACHE_MB * 2**20 and user_cache == 1024 * 2**20
    # the bounded cache is used (it fills) but holds no more than the bound
    assert BLOCK_CACHE_MB // 2 <= bounded <= BLOCK_CACHE_MB + 24, (bounded, unbounded)
    # without the bound the file stays cached as it is read (GDAL keeps what it decodes)
    assert unbounded >= BLOCK_CACHE_MB + 50, (bounded, unbounded)
