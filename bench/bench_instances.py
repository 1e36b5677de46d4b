"""Benchmark: instance vectorization, chunked on Dask workers vs the whole raster in one process.

Run by hand (not in tests):

    .venv/bin/python bench/bench_instances.py --size 16384 --objects 100000 --repeats 2

Writes a label GeoTIFF of touching rectangles (row houses: chains of objects sharing walls,
labelled interior / boundary / background as a boundary model predicts them), then times the
``gigaseg vectorize --instances boundary`` command as a subprocess two ways, side by side in
each repeat:

- whole: one chunk covering the raster, in-process (``--chunk SIZE --workers 0``): the rules
  applied to the whole raster at once;
- chunked: ``--chunk 4096 --workers 2``.

Prints the command lines, the CPU and load, then a table: median wall time, speed ratio,
peak RSS (the command and its worker processes), features, and whether the two outputs are
identical (same ids, zero symmetric difference) and hold every object exactly once; a second
table splits the wall time into the run report's stages (median over repeats). Exits
non-zero when the outputs differ.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import rasterio
from rasterio.transform import Affine

SEED = 20261202
ROOT = Path(__file__).resolve().parents[1]


def make_raster(path: Path, size: int, objects: int) -> int:
    """Write touching rectangles labelled 1 (interior) / 2 (boundary); return their count.

    Streets of row houses: each street is a band of rows; houses share walls with their
    neighbours in chains of 2 to 12, chains are separated by small gaps. Bands are written one
    at a time, so memory stays one street wide.
    """
    from pipeline.sample.boundary import boundary_targets

    rng = np.random.default_rng(SEED)
    mean_width = 26
    per_street = max(1, size // (mean_width + 3))
    streets = max(1, -(-objects // per_street))
    pitch = max(20, size // streets)
    profile = {
        "driver": "GTiff", "width": size, "height": size, "count": 1, "dtype": "uint8",
        "crs": "EPSG:32616", "transform": Affine(0.5, 0, 700000.0, 0, -0.5, 3800000.0),
        "tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "deflate",
        "BIGTIFF": "IF_SAFER",
    }  # fmt: skip
    placed = 0
    with rasterio.open(path, "w", **profile) as ds:
        ds.update_tags(classes=json.dumps(["background", "building", "boundary"]))
        for street in range(streets):
            top = street * pitch
            if top + pitch > size:
                break
            ids = np.zeros((pitch, size), np.int32)
            col, chain = 2, 0
            while placed < objects:
                width = int(rng.integers(14, 40))
                height = int(rng.integers(max(10, pitch // 2), pitch - 4))
                if col + width > size - 2:
                    break
                offset = int(rng.integers(1, pitch - height))
                placed += 1
                ids[offset : offset + height, col : col + width] = placed
                chain += 1
                col += width
                if chain >= int(rng.integers(2, 13)):
                    col, chain = col + int(rng.integers(3, 9)), 0
            labels = boundary_targets(ids, (ids > 0).astype(np.uint8), 1.5, 2)
            ds.write(labels, 1, window=rasterio.windows.Window(0, top, size, pitch))
    return placed


class PeakRSS:
    """Polls the summed RSS of a process and its descendants (Dask nanny/worker processes)."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid, self.interval, self.total = pid, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._stop.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
                self.total = max(self.total, sum(p.memory_info().rss for p in procs))
            except psutil.Error:
                pass
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_cli(args: list[str], report: Path) -> tuple[float, int, dict[str, float]]:
    """Run ``gigaseg`` with ``args`` as a subprocess; return wall s, peak RSS, stage seconds."""
    command = [sys.executable, "-m", "workflows", *args, "--report", str(report)]
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with PeakRSS(proc.pid) as peak:
        _, err = proc.communicate()
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{err.decode()[-2000:]}")
    stages = json.loads(report.read_text())["seconds"]
    stages["process"] = seconds - stages["total"]  # interpreter start, imports, exit
    return seconds, peak.total, stages


def compare(a: Path, b: Path) -> tuple[int, int, bool, float]:
    """Feature counts, same ids, and the largest symmetric-difference area (matched by id)."""
    import pyarrow.parquet as pq
    import shapely

    tables = [pq.read_table(p, columns=["id", "geometry"]) for p in (a, b)]
    ids = [t.column("id").to_numpy() for t in tables]
    same = bool(np.array_equal(np.sort(ids[0]), np.sort(ids[1])))
    if not same:
        return len(ids[0]), len(ids[1]), False, float("nan")
    geoms = []
    for table, found in zip(tables, ids, strict=True):
        order = np.argsort(found)
        geoms.append(np.asarray(shapely.from_wkb(table.column("geometry").to_pylist()))[order])
    diff = float(shapely.area(shapely.symmetric_difference(geoms[0], geoms[1])).max())
    return len(ids[0]), len(ids[1]), same, diff


def main() -> int:
    """Write the raster, time both ways side by side, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16384)
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=4096)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tmp", default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    print("$ " + " ".join([Path(sys.executable).name, *sys.argv]))
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                .splitlines() if line.startswith("model name")), "?")  # fmt: skip
    print(f"CPU: {cpu}, {os.cpu_count()} cores; load average at start {os.getloadavg()}")
    with tempfile.TemporaryDirectory(dir=args.tmp) as folder:
        tmp = Path(folder)
        tif = tmp / "labels.tif"
        started = time.perf_counter()
        count = make_raster(tif, args.size, args.objects)
        print(f"raster {args.size}² with {count} touching objects written in "
              f"{time.perf_counter() - started:.0f} s")  # fmt: skip
        common = ["vectorize", str(tif), "--instances", "boundary", "--no-progress", "--overwrite"]
        ways = {
            "whole raster, 1 process": [*common, "--chunk", str(args.size), "--workers", "0"],
            f"chunked {args.chunk}, {args.workers} workers": [
                *common, "--chunk", str(args.chunk), "--workers", str(args.workers),
            ],
        }  # fmt: skip
        results: dict[str, list[tuple[float, int, dict[str, float]]]] = {n: [] for n in ways}
        outputs = {name: tmp / f"out-{i}.parquet" for i, name in enumerate(ways)}
        for name, cli in ways.items():
            print("$ gigaseg " + " ".join([*cli, "--out", outputs[name].name]))
        for repeat in range(args.repeats):
            for name, cli in ways.items():
                results[name].append(
                    run_cli([*cli, "--out", str(outputs[name])], tmp / "report.json")
                )
                seconds, rss, _ = results[name][-1]
                print(
                    f"repeat {repeat + 1}: {name}: {seconds:.1f} s, peak RSS {rss / 2**30:.2f} GiB"
                )
        whole, chunked = (outputs[name] for name in ways)
        n_whole, n_chunked, same_ids, diff = compare(whole, chunked)
        base = statistics.median(s for s, *_ in results[next(iter(ways))])
        print()
        print("| run | median wall s | speed vs whole | peak RSS GiB | features |")
        print("|---|---|---|---|---|")
        for (name, runs), n in zip(results.items(), (n_whole, n_chunked), strict=True):
            wall = statistics.median(s for s, *_ in runs)
            rss = max(r for _, r, _ in runs) / 2**30
            print(f"| {name} | {wall:.1f} | {base / wall:.2f}x | {rss:.2f} | {n} |")
        print()
        stages = ["process", "setup", "trace_wall", "merge_and_lines", "close",
                  "workers_read", "workers_trace", "workers_finish", "workers_cpu"]  # fmt: skip
        print("stage seconds (median): process = interpreter start, imports and exit; setup ="
              " cluster start; workers_* = summed over chunks (wall, and CPU: less moved by"
              " the machine's load)")  # fmt: skip
        print("| run | " + " | ".join(stages) + " |")
        print("|---" * (len(stages) + 1) + "|")
        for name, runs in results.items():
            cells = [statistics.median(r[2].get(k, 0.0) for r in runs) for k in stages]
            print(f"| {name} | " + " | ".join(f"{c:.1f}" for c in cells) + " |")
        print()
        identical = same_ids and diff == 0 and n_whole == n_chunked == count
        print(f"identical output: same ids {same_ids}, max symmetric-difference area {diff:g} "
              f"map units²; objects written {count}, found {n_chunked}")  # fmt: skip
        print(f"load average at end {os.getloadavg()}")
    if not identical:
        print("FAILED: the chunked output differs from the whole raster's", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
