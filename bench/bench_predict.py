"""Benchmark ``gigaseg predict`` as a user times it, against MONAI, run by hand.

    .venv/bin/python bench/bench_predict.py --sizes 4096 8192 16384 --repeats 3
    .venv/bin/python bench/bench_predict.py --sizes 2048 --repeats 1 --precision fp32  # quick

Everything is a subprocess timed by wall clock from start to exit, as a user waits for it:

ours      ``gigaseg predict IMAGE --model M --out S.zarr`` (start-up, model load, autotune
          cache lookup, reads, writes included; default settings, ``--precision`` pinned)
MONAI     a script that loads the same model, reads the image, and runs
          ``sliding_window_inference`` (roi 512, overlap 0.25, gaussian) with its own best
          configuration, chosen first by measurement (sw_batch 1/2/4/8, channels_last or
          not) and given the same precision (bf16 through autocast)
model     forward passes only, in this process, on the windows ours computes (the autotuned
          patch plus its halo), already in memory: the ceiling for ours

P1 = ours / model-only, P2 = ours / MONAI (both in Mpx/s of output), medians of ``--repeats``,
all measured side by side in one run. Peak RSS is the largest of the subprocess tree
(``wait4``: the CLI process, which runs the tasks in process by default); one more run at the
first size with no options at all (``--precision auto``, first use of the autotune included)
gives the peak RSS at the default settings.

The latency table times, as subprocesses with default options, ``gigaseg predict`` of a 512²
3-band uint8 GeoTIFF with the shipped demo model (``sample/model``) and ``gigaseg vectorize``
of a 1300² label raster: median, min and max wall seconds of ``--latency-runs`` runs, and the
median CPU seconds (user + system) of the process tree, which the machine's load does not
inflate as it does wall clock.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from affine import Affine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import unet  # noqa: E402
from pipeline.infer import Predictor, describe_model  # noqa: E402
from pipeline.infer.autotune import candidate_patches  # noqa: E402

GIGASEG = [str(Path(sys.executable).with_name("gigaseg"))]

MONAI_SCRIPT = r"""
import sys, time
import numpy as np, rasterio, torch
from monai.inferers import sliding_window_inference
sys.path.insert(0, sys.argv[1])
import unet
image, model, out, precision, sw_batch, channels_last = sys.argv[2:8]
net, meta = unet.load(model)
net.eval()
if channels_last == "1":
    net = net.to(memory_format=torch.channels_last)
with rasterio.open(image) as dataset:
    raw = dataset.read().astype(np.float32)
mean = np.asarray(meta.mean, np.float32)[:, None, None]
std = np.asarray(meta.std, np.float32)[:, None, None]
x = torch.from_numpy((raw - mean) / std)[None]
dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
    logits = sliding_window_inference(
        x, roi_size=(512, 512), sw_batch_size=int(sw_batch), predictor=net, overlap=0.25,
        mode="gaussian",
    )
    probs = torch.sigmoid(logits.float())
np.save(out, (probs[0].numpy() * 255).astype(np.uint8))
"""


def synthetic_geotiff(path: Path, size: int) -> Path:
    """A 3-band uint8 GeoTIFF with smooth structure plus noise, written block by block."""
    if path.exists():
        return path
    block = 1024
    profile = {
        "driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8",
        "tiled": True, "blockxsize": 512, "blockysize": 512, "crs": "EPSG:32618",
        "transform": Affine(0.5, 0, 500000, 0, -0.5, 4000000),
    }  # fmt: skip
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", **profile) as dataset:
        for r in range(0, size, block):
            for c in range(0, size, block):
                h, w = min(block, size - r), min(block, size - c)
                yy, xx = np.mgrid[r : r + h, c : c + w].astype(np.float32)
                base = 127 + 60 * np.sin(xx / 97.0) * np.cos(yy / 53.0)
                data = np.stack([base, base * 0.8 + 20, 255 - base]) + rng.normal(0, 12, (3, h, w))
                window = rasterio.windows.Window(c, r, w, h)
                dataset.write(np.clip(data, 0, 255).astype(np.uint8), window=window)
    return path


def label_raster(path: Path, size: int) -> Path:
    """A uint8 label GeoTIFF with a few hundred blobs (the vectorize latency input)."""
    if path.exists():
        return path
    yy, xx = np.mgrid[0:size, 0:size]
    labels = ((np.sin(xx / 23.0) * np.cos(yy / 31.0)) > 0.6).astype(np.uint8)
    profile = {
        "driver": "GTiff", "width": size, "height": size, "count": 1, "dtype": "uint8",
        "crs": "EPSG:32618", "transform": Affine(0.5, 0, 500000, 0, -0.5, 4000000),
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as dataset:
        dataset.write(labels, 1)
    return path


def make_model(path: Path, base: int, depth: int) -> Path:
    """A U-Net with batch norm and non-trivial running statistics, saved as a checkpoint."""
    if path.exists():
        return path
    torch.manual_seed(0)
    model = unet.UNet(in_channels=3, classes=1, base=base, depth=depth)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_var.uniform_(0.5, 2.0)
    unet.save(model, path, classes=["building"], bands=[1, 2, 3], mean=[127.0] * 3, std=[60.0] * 3)
    return path


def timed(argv: list[str]) -> dict[str, Any]:
    """Run a command; return its wall seconds, CPU seconds and peak RSS (``wait4``)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed: {stderr[-2000:]}")
    cpu = usage.ru_utime + usage.ru_stime
    return {
        "seconds": seconds, "cpu": cpu, "rss": usage.ru_maxrss * 1024, "stdout": stdout,
        "stderr": stderr,
    }  # fmt: skip


def ours(image: Path, model: Path, out: Path, precision: str | None) -> dict[str, Any]:
    """``gigaseg predict`` as a subprocess (``precision=None``: the default, auto)."""
    report = out.with_suffix(".json")
    argv = [*GIGASEG, "predict", str(image), "--model", str(model), "--out", str(out)]
    if precision is not None:
        argv += ["--precision", precision]
    argv += ["--overwrite", "--no-progress", "--report", str(report)]
    result = timed(argv)
    result["report"] = json.loads(report.read_text())
    result["argv"] = argv
    return result


def monai(image: Path, model: Path, out: Path, precision: str, sw: int, cl: bool) -> dict[str, Any]:
    script = out.parent / "monai_sliding_window.py"
    script.write_text(MONAI_SCRIPT)
    argv = [sys.executable, str(script), str(ROOT), str(image), str(model), str(out),
            precision, str(sw), "1" if cl else "0"]  # fmt: skip
    result = timed(argv)
    result["argv"] = argv
    return result


def monai_best(crop: Path, model: Path, work: Path, precision: str) -> tuple[int, bool, str]:
    """MONAI's own best sw_batch and memory format, measured on a smaller image."""
    trials = []
    for sw in (1, 2, 4, 8):
        for cl in (False, True):
            seconds = monai(crop, model, work / "monai_trial.npy", precision, sw, cl)["seconds"]
            trials.append((seconds, sw, cl))
    best = min(trials)
    text = ", ".join(f"sw{sw}{'+cl' if cl else ''} {s:.1f}s" for s, sw, cl in sorted(trials))
    return best[1], best[2], text


def model_only(image: Path, model: Path, precision: str, patch: int, batch: int) -> float:
    """Output Mpx/s of the forward passes alone on ours' windows, already in memory."""
    info, network = describe_model(str(model), loader="pipeline.predict:load_gigaseg")
    forward = Predictor(network, info, device="cpu", precision=precision)
    halo = int(info.halo or 0)
    window = patch + 2 * halo
    with rasterio.open(image) as dataset:
        size = min(dataset.width, dataset.height, window)
        box = dataset.read(window=rasterio.windows.Window(0, 0, size, size))
    windows = np.stack([np.pad(box, ((0, 0), (0, window - size), (0, window - size)),
                               mode="reflect")] * batch)  # fmt: skip
    forward(windows)  # warm-up
    calls = 0
    start = time.perf_counter()
    while calls < 2 or time.perf_counter() - start < 20:
        forward(windows)
        calls += 1
    return calls * batch * patch * patch / 1e6 / (time.perf_counter() - start)


def print_table(rows: list[tuple[Any, ...]], repeats: int) -> None:
    """The one table: Mpx/s per size, P1, P2 and peak RSS."""
    print()
    print(f"| Mpx/s (median of {repeats}) | " + " | ".join(f"{r[0]}²" for r in rows) + " |")
    print("|---|" + "---|" * len(rows))
    print("| gigaseg predict (CLI wall clock) | " + " | ".join(f"{r[1]:.3f}" for r in rows) + " |")
    print(
        "| MONAI sliding window (script wall clock) | "
        + " | ".join(f"{r[2]:.3f}" for r in rows)
        + " |"
    )
    print("| model only, same windows | " + " | ".join(f"{r[3]:.3f}" for r in rows) + " |")
    print("| P1 = ours / model-only | " + " | ".join(f"{r[1] / r[3]:.2f}" for r in rows) + " |")
    print("| P2 = ours / MONAI | " + " | ".join(f"{r[1] / r[2]:.2f}" for r in rows) + " |")
    print(
        "| peak RSS of gigaseg predict, GB | "
        + " | ".join(f"{r[4] / 1e9:.2f}" for r in rows)
        + " |"
    )


def store_attrs(store: Path) -> dict[str, Any]:
    """The attributes of a gigaseg store (patch, batch, precision... as the run chose them)."""
    attrs: dict[str, Any] = json.loads((store / "zarr.json").read_text())["attributes"]
    return attrs


def default_rss(work: Path, model: Path, size: int) -> None:
    """Peak RSS of ``gigaseg predict`` with no options at all (first use of the autotune)."""
    store = work / "default.zarr"
    run = ours(synthetic_geotiff(work / f"synthetic_{size}.tif", size), model, store, None)
    attrs = store_attrs(store)
    shutil.rmtree(store, ignore_errors=True)
    print(
        f"peak RSS of gigaseg predict {size}² at the default settings (no options: precision "
        f"{attrs.get('precision')}, patch {attrs.get('patch')}, batch {attrs.get('batch')}): "
        f"{run['rss'] / 1e9:.2f} GB, {run['seconds']:.1f} s"
    )


def latency(work: Path, runs: int) -> None:
    """The latency table: ``gigaseg predict`` 512² and ``gigaseg vectorize`` 1300², defaults."""
    small = synthetic_geotiff(work / "synthetic_512.tif", 512)
    labels = label_raster(work / "labels_1300.tif", 1300)
    demo = ROOT / "sample" / "model" / "buildings.safetensors"
    commands = {
        "gigaseg predict 512² (demo model)": [
            *GIGASEG, "predict", str(small), "--model", str(demo), "--out",
            str(work / "small.zarr"), "--overwrite", "--no-progress",
        ],
        "gigaseg vectorize 1300² labels": [
            *GIGASEG, "vectorize", str(labels), "--out", str(work / "v.geojson"),
            "--overwrite", "--no-progress",
        ],
    }  # fmt: skip
    print()
    print(f"| latency, {runs} runs, default options | median s | min s | max s | CPU s (median) |")
    print("|---|---|---|---|---|")
    for name, argv in commands.items():
        done = [timed(argv) for _ in range(runs)]
        wall = [d["seconds"] for d in done]
        cpu = median([d["cpu"] for d in done])
        print(f"| {name} | {median(wall):.2f} | {min(wall):.2f} | {max(wall):.2f} | {cpu:.2f} |")
    print(f"load average after: {os.getloadavg()}")


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[4096, 8192, 16384])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--no-latency", action="store_true")
    parser.add_argument("--latency-only", action="store_true")
    parser.add_argument("--latency-runs", type=int, default=5)
    parser.add_argument(
        "--monai-crop", type=int, default=2048, help="image side for MONAI's tuning"
    )
    args = parser.parse_args()
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text()
                .splitlines() if ln.startswith("model name")), "?")  # fmt: skip
    print("command:", " ".join([Path(sys.executable).name, *sys.argv]))
    print(f"cpu: {cpu}, {os.cpu_count()} cores; load average {os.getloadavg()}")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_predict_"))
    work.mkdir(parents=True, exist_ok=True)
    if args.latency_only:
        latency(work, args.latency_runs)
        return
    model = make_model(work / "unet16x4.safetensors", 16, 4)
    p = args.precision
    # First use: the autotune measurement (cached afterwards, as for a user's second run).
    warm = synthetic_geotiff(work / "synthetic_4096.tif", 4096)
    first = ours(warm, model, work / "warm.zarr", p)
    chosen = store_attrs(work / "warm.zarr")
    tuning = chosen.get("patch_tuning") or {}
    print(f"first run (autotune at first use): {first['seconds']:.1f} s; tuning {tuning}")
    patch, batch = int(chosen["patch"]), int(chosen["batch"])
    info, _ = describe_model(str(model), loader="pipeline.predict:load_gigaseg")
    assert patch in candidate_patches(2048, info.alignment, int(info.halo or 0))
    crop = synthetic_geotiff(work / f"synthetic_{args.monai_crop}.tif", args.monai_crop)
    sw, cl, trials = monai_best(crop, model, work, p)
    print(f"MONAI best on {args.monai_crop}²: sw_batch {sw}, channels_last {cl} ({trials})")
    print(f"ours: patch {patch}, batch {batch} (autotuned), halo {info.halo}; precision {p}")
    print(f"ours argv: {' '.join(first['argv'])}")
    rows = []
    for size in args.sizes:
        image = synthetic_geotiff(work / f"synthetic_{size}.tif", size)
        mpx = size * size / 1e6
        o, m, f, rss = [], [], [], []
        for _ in range(args.repeats):
            run = ours(image, model, work / f"ours_{size}.zarr", p)
            o.append(mpx / run["seconds"])
            rss.append(run["rss"])
            m.append(mpx / monai(image, model, work / "monai.npy", p, sw, cl)["seconds"])
            f.append(model_only(image, model, p, patch, batch))
        rows.append((size, median(o), median(m), median(f), max(rss)))
        shutil.rmtree(work / f"ours_{size}.zarr", ignore_errors=True)
        print(f"  {size}²: ours {o}, MONAI {m}, model-only {f} Mpx/s", flush=True)
    print_table(rows, args.repeats)
    default_rss(work, model, args.sizes[0])
    if args.no_latency:
        return
    latency(work, args.latency_runs)


if __name__ == "__main__":
    main()
