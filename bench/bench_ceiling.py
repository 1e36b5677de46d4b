"""The pipeline's own ceiling: ``gigaseg predict`` with a model that costs nothing vs the floor.

A GPU makes the U-Net cheap, so what is left is the CPU side: read, decode, normalise, batch,
activate, encode, compress, write, ledger, scheduling. This bench measures that side alone: an
"identity" model (a 1x1 convolution exported to ONNX, run with ``--halo 0``) through the CLI,
timed as a user waits for it (a subprocess: start-up, cluster and model load included), against
the plain floor loop in one process on the same source and the same store layout (the floor's
arrays are created from the metadata of the store gigaseg wrote, so codecs and chunks match):

    rasterio windowed read -> float32 -> sigmoid -> uint8 encode + labels -> zarr write

Usage (run by hand; prints a table)::

    .venv/bin/python bench/bench_ceiling.py                      # 8192^2 and 16384^2, 3 repeats
    .venv/bin/python bench/bench_ceiling.py --sizes 8192 --repeats 1 --memory 8192 24576

``--memory`` also runs gigaseg once at each given size and reports the peak resident memory of
the whole process tree (client + workers), sampled every 50 ms.

Each row gives the median wall clock and the median CPU seconds (user + system of the process
tree), each also as a ratio to the floor's: on a shared machine the CPU ratio moves less. The
``start-up`` row is the same command on a 256^2 source (one tile): imports, cluster, model load.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GIGASEG = [sys.executable, "-m", "workflows"]

FLOOR = textwrap.dedent(
    """
    import json, sys, time
    t0 = time.perf_counter()
    import numpy as np, rasterio, zarr
    from rasterio.windows import Window
    src, out, tile = sys.argv[1], sys.argv[2], int(sys.argv[3])
    stage = dict.fromkeys(["import", "read", "normalise", "activation", "encode", "write"], 0.0)
    stage["import"] = time.perf_counter() - t0
    probs = zarr.open_array(out + "/probabilities", mode="r+")
    labels = zarr.open_array(out + "/labels", mode="r+")
    with rasterio.open(src) as ds:
        height, width = ds.height, ds.width
        for r in range(0, height, tile):
            for c in range(0, width, tile):
                t = time.perf_counter()
                raw = ds.read(1, window=Window(c, r, min(tile, width - c), min(tile, height - r)))
                t1 = time.perf_counter(); stage["read"] += t1 - t
                x = raw.astype(np.float32) / 64.0 - 2.0
                t2 = time.perf_counter(); stage["normalise"] += t2 - t1
                p = 1.0 / (1.0 + np.exp(-x))
                t3 = time.perf_counter(); stage["activation"] += t3 - t2
                u = np.rint(p * 255.0).astype(np.uint8)
                lab = (p >= 0.5).astype(np.uint8)
                t4 = time.perf_counter(); stage["encode"] += t4 - t3
                rows, cols = raw.shape
                probs[0, r : r + rows, c : c + cols] = u
                labels[r : r + rows, c : c + cols] = lab
                stage["write"] += time.perf_counter() - t4
    print(json.dumps(stage))
    """
)


def make_source(path: Path, size: int) -> None:
    """Write a ``size`` x ``size`` single-band uint8 tiled GeoTIFF (512 blocks, deflate)."""
    import rasterio
    from rasterio.transform import from_origin

    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 1,
        "dtype": "uint8",
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "deflate",
        "crs": "EPSG:32633",
        "transform": from_origin(500000, 6000000, 0.5, 0.5),
    }
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", **profile) as ds:
        for row in range(0, size, 2048):
            rows = min(2048, size - row)
            block = rng.integers(0, 256, (1, rows, size), dtype=np.uint8)
            ds.write(block, window=((row, row + rows), (0, size)))


def make_identity(path: Path) -> None:
    """A 1x1 convolution (``x / 64 - 2``) as ONNX: a model that costs nothing."""
    import warnings

    import torch

    conv = torch.nn.Conv2d(1, 1, 1)
    conv.weight.data.fill_(1 / 64)
    assert conv.bias is not None
    conv.bias.data.fill_(-2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            conv,
            (torch.zeros(1, 1, 64, 64),),
            str(path),
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n", 2: "h", 3: "w"}},
            dynamo=False,
        )


def run_timed(cmd: list[str], *, sample_memory: bool = False) -> tuple[float, float, int, str]:
    """Run ``cmd``; return wall seconds, CPU seconds, peak RSS of the process tree, stdout.

    CPU seconds are user + system of the command and every descendant it waited for (from
    ``getrusage(RUSAGE_CHILDREN)``): on a shared machine they move less than the wall clock.
    """
    import psutil

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    if sample_memory:
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                procs = [root, *root.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in procs if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.05)
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{err[-2000:]}")
    return wall, cpu, peak, out


def gigaseg(src: Path, model: Path, store: Path, report: Path, *extra: str) -> list[str]:
    """The ``gigaseg predict`` command line of the bench."""
    return [
        *GIGASEG,
        "predict",
        str(src),
        "--model",
        str(model),
        "--halo",
        "0",
        "--out",
        str(store),
        "--overwrite",
        "--no-progress",
        "--report",
        str(report),
        *extra,
    ]


def floor_store(template: Path, target: Path) -> None:
    """Empty arrays with the metadata (chunks, codecs) of the store gigaseg wrote."""
    if target.exists():
        shutil.rmtree(target)
    for name in ("probabilities", "labels"):
        (target / name).mkdir(parents=True)
        shutil.copy(template / name / "zarr.json", target / name / "zarr.json")


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0915 - one linear script
    """Run the bench and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8192, 16384])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tile", type=int, default=2048)
    parser.add_argument("--memory", type=int, nargs="*", default=[], metavar="SIZE")
    parser.add_argument("--variants", nargs="+", default=["default", "workers0", "prefetch0"])
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="gigaseg-ceiling-"))
    work.mkdir(parents=True, exist_ok=True)
    model = work / "identity.onnx"
    make_identity(model)
    variants = {
        "default": [],
        "workers0": ["--workers", "0"],
        "workers2": ["--workers", "2"],
        "prefetch0": ["--prefetch", "0"],
    }
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")), "?")
    print(f"CPU: {cpu}; {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}")
    tiny = work / "src256.tif"
    if not tiny.exists():
        make_source(tiny, 256)
    rows = []
    for size in sorted(set(args.sizes) | set(args.memory)):
        src = work / f"src{size}.tif"
        if not src.exists():
            make_source(src, size)
        mpx = size * size / 1e6
        if size not in args.sizes:
            continue
        times: dict[str, list[tuple[float, float]]] = {"floor": []}
        stages: dict[str, list[dict[str, float]]] = {"floor": []}
        for _ in range(args.repeats):
            for name in args.variants:  # same run, interleaved: ratios side by side
                store = work / f"o{size}-{name}.zarr"
                report = work / f"r{size}-{name}.json"
                wall, cpu_s, _, _ = run_timed(gigaseg(src, model, store, report, *variants[name]))
                times.setdefault(name, []).append((wall, cpu_s))
                stages.setdefault(name, []).append(json.loads(report.read_text())["seconds"])
            template = work / f"o{size}-{args.variants[0]}.zarr"
            floor = work / f"floor{size}.zarr"
            floor_store(template, floor)
            script = work / "floor.py"
            script.write_text(FLOOR)
            wall, cpu_s, _, out = run_timed(
                [sys.executable, str(script), str(src), str(floor), str(args.tile)]
            )
            times["floor"].append((wall, cpu_s))
            stages["floor"].append(json.loads(out.strip().splitlines()[-1]))
            # start-up alone: the same command on a 256^2 source (one tile)
            report = work / "r256.json"
            wall, cpu_s, _, _ = run_timed(gigaseg(tiny, model, work / "o256.zarr", report))
            times.setdefault("start-up", []).append((wall, cpu_s))
            stages.setdefault("start-up", []).append(json.loads(report.read_text())["seconds"])
        floor_wall = statistics.median(w for w, _ in times["floor"])
        floor_cpu = statistics.median(c for _, c in times["floor"])
        for name, runs in times.items():
            med = statistics.median(w for w, _ in runs)
            cpu_med = statistics.median(c for _, c in runs)
            stage = {
                k: statistics.median(s.get(k, 0.0) for s in stages[name]) for k in stages[name][0]
            }
            rate = mpx / med if name != "start-up" else 0.0
            rows.append(
                (size, name, med, rate, floor_wall / med, cpu_med, floor_cpu / cpu_med, stage)
            )
    print()
    head = (
        f"{'size':>6} | {'run':<10} | {'wall s':>7} | {'Mpx/s':>6} | {'vs floor':>8} | "
        f"{'CPU s':>6} | {'CPU vs floor':>12}"
    )
    print(f"{head} | stages (s, summed over tasks)")
    print("-" * 120)
    for size, name, med, rate, ratio, cpu_med, cpu_ratio, stage in rows:
        parts = ", ".join(f"{k} {v:.2f}" for k, v in stage.items() if k != "total")
        print(
            f"{size:>6} | {name:<10} | {med:7.2f} | {rate:6.2f} | {ratio:8.2f} | "
            f"{cpu_med:6.2f} | {cpu_ratio:12.2f} | {parts}"
        )
    if args.memory:
        print()
        print(f"{'size':>6} | {'peak RSS of the process tree (MB)':>34}")
        base = None
        for size in args.memory:
            src = work / f"src{size}.tif"
            _, _, peak, _ = run_timed(
                gigaseg(src, model, work / "mem.zarr", work / "mem.json"), sample_memory=True
            )
            base = base or peak
            print(f"{size:>6} | {peak / 1e6:34.0f}   ({peak / base:.2f}x the first)")
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}; work dir {work}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
