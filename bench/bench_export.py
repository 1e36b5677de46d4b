"""Peak memory and time of ``gigaseg export`` (COG) on a large store, the CLI timed as users run it.

Builds a SIDE x SIDE store (default 32768², tiles of 2048) through ``pipeline.store`` with
blocky labels and smooth probabilities, then runs ``gigaseg export`` as a subprocess for the
labels and for one class's probabilities, reporting wall time, the child's peak RSS
(``ru_maxrss``), the COG size and whether ``rio_cogeo.cog_validate`` accepts it.

    .venv/bin/python bench/bench_export.py --side 32768 --tile 2048 --dir /tmp/bench-export
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def build_store(path: Path, side: int, tile: int) -> float:
    from pipeline.store import complete_store, create_store, mark_tiles, to_stored, write_core
    from pipeline.tile.grid import Window

    start = time.perf_counter()
    grid = (side + tile - 1) // tile
    attrs = {
        "crs": "EPSG:32616", "transform": [733601.0, 0.5, 0.0, 3725139.0, 0.0, -0.5],
        "classes": ["building"], "run_id": "bench", "shape": [side, side], "tile": tile,
        "probabilities_dtype": "uint8",
    }  # fmt: skip
    create_store(path, shape=(side, side), outputs=1, tile=tile, grid_shape=(grid, grid),
                 probabilities="uint8", attrs=attrs)  # fmt: skip
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:tile, 0:tile].astype(np.float32) / tile
    for r in range(grid):
        for c in range(grid):
            if (r + c) % 7 == 6:  # some tiles skipped (nodata in the COG)
                mark_tiles(str(path), [(r, c)], 2, "bench")
                continue
            phase = rng.random(2).astype(np.float32) * 6.28
            p = 0.5 + 0.5 * np.sin(20 * xx + phase[0]) * np.cos(17 * yy + phase[1])
            window = Window(
                r * tile, c * tile, min(tile, side - r * tile), min(tile, side - c * tile)
            )
            p = p[: window.height, : window.width][None]
            write_core(
                str(path), window, to_stored(p, "uint8"), (p[0] >= 0.5).astype(np.uint8), "bench"
            )
            mark_tiles(str(path), [(r, c)], 1, "bench")
    complete_store(path, run_id="bench")
    return time.perf_counter() - start


def export(store: Path, out: Path, *extra: str) -> dict[str, object]:
    cmd = [sys.executable, "-m", "workflows", "export", str(store), "--out", str(out), *extra]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    stderr = proc.stderr.read() if proc.stderr else ""
    if status != 0:
        raise SystemExit(f"export failed: {stderr}")
    from rio_cogeo.cogeo import cog_validate

    return {
        "seconds": round(seconds, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "size_mb": round(out.stat().st_size / 2**20, 1),
        "cog_valid": cog_validate(str(out))[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=32768)
    parser.add_argument("--tile", type=int, default=2048)
    parser.add_argument("--dir", default="/tmp/bench-export")
    args = parser.parse_args()
    folder = Path(args.dir)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    store = folder / "big.zarr"
    built = build_store(store, args.side, args.tile)
    labels = export(store, folder / "labels.tif")
    probs = export(store, folder / "p.tif", "--class", "building")
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), "?"
    )  # fmt: skip
    store_mb = sum(f.stat().st_size for f in store.rglob("*") if f.is_file()) / 2**20
    print(json.dumps({
        "side": args.side, "tile": args.tile, "store_build_s": round(built, 1),
        "store_mb": round(store_mb, 1),
        "labels": labels, "probabilities": probs, "cpu": cpu,
        "loadavg": os.getloadavg(), "self_peak_rss_mb": round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }, indent=2))  # fmt: skip
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
