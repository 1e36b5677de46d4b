"""Benchmark of streaming tiled inference (issue 3), run by hand.

    .venv/bin/python bench/bench_predict.py --quick          # 4096^2 (+2048^2 for P4/P5)
    .venv/bin/python bench/bench_predict.py                  # 16384^2 and 4096..32768 for P4/P5

Prints, from one run (medians over --repeats):

P1  end-to-end Mpx/s / model-only Mpx/s (same model, tiles, precision; model-only runs the
    forward passes on the very same windows, already in memory)
P2  ours (end to end) / MONAI sliding_window_inference (roi 512, overlap 0.25, gaussian, same
    model and precision, image already in RAM), in Mpx/s
P3  precision auto / fp32, model-only
P4  peak RSS (client + worker) per image size
P5  s/Mpx per image size (U-Net base 16 depth 4; a tiny U-Net for 32768^2, also run at 8192^2
    so the two can be compared)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import rasterio
import torch
from affine import Affine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import unet  # noqa: E402
from pipeline.infer import Predictor, describe_model  # noqa: E402
from pipeline.predict import predict  # noqa: E402
from pipeline.read import open_source  # noqa: E402
from pipeline.tile import TileGrid  # noqa: E402


def synthetic_geotiff(path: Path, size: int) -> Path:
    """A 3-band uint8 GeoTIFF with smooth structure plus noise, written block by block."""
    if path.exists():
        return path
    block = 1024
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 3,
        "dtype": "uint8",
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "crs": "EPSG:32618",
        "transform": Affine(0.5, 0, 500000, 0, -0.5, 4000000),
    }
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


def make_model(path: Path, base: int, depth: int) -> Path:
    torch.manual_seed(0)
    model = unet.UNet(in_channels=3, classes=1, base=base, depth=depth)
    unet.save(model, path, classes=["building"], bands=[1, 2, 3], mean=[127.0] * 3, std=[60.0] * 3)
    return path


def new_client(workers: int | None = None) -> Any:
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=workers or 1,
        threads_per_worker=2,
        processes=True,
        host="127.0.0.1",
        dashboard_address=":0",
        silence_logs=50,
    )
    return Client(cluster), cluster


def end_to_end(image: Path, model: Path, out: Path, tile: int, precision: str) -> dict[str, Any]:
    """One pipeline.predict run on a fresh 1-worker LocalCluster (startup not timed)."""
    client, cluster = new_client()
    client_before = psutil.Process().memory_info().rss
    try:
        client.run(lambda: __import__("torch").set_num_threads(os.cpu_count() or 1))
        start = time.perf_counter()
        report = predict(
            image,
            model,
            out,
            tile=tile,
            precision=precision,
            client=client,
            overwrite=True,
            progress=False,
        )
        seconds = time.perf_counter() - start
    finally:
        client.close()
        cluster.close()
    mpx = report.megapixels
    client_growth = max(0, psutil.Process().memory_info().rss - client_before)
    return {
        "seconds": seconds,
        "mpx": mpx,
        "mpx_s": mpx / seconds,
        "rss": report.peak_worker_memory,
        "client": client_growth,
        "report": report.to_dict(),
    }


def model_only(image: Path, model: Path, tile: int, precision: str, max_tiles: int) -> float:
    """Mpx/s of the forward passes alone, on the same windows, read into memory first."""
    info, network = describe_model(str(model))
    forward = Predictor(network, info, precision=precision, threads=os.cpu_count())
    source = open_source(image)
    grid = TileGrid(*source.shape, tile, int(info.halo or 0), info.alignment, info.sizes)
    plans = [grid.plan(r, c) for r, c in list(grid.indices())[:max_tiles]]
    boxes = [source.read(plan.read) for plan in plans]
    mpx = sum(plan.core.height * plan.core.width for plan in plans) / 1e6
    start = time.perf_counter()
    for plan, box in zip(plans, boxes, strict=True):
        assert len(plan.patches) == 1  # default: the whole tile is one model call
        forward(box[None])
    return mpx / (time.perf_counter() - start)


def monai_mpx_s(image: Path, model: Path, precision: str) -> float:
    from monai.inferers import sliding_window_inference

    net, _ = unet.load(model)
    torch.set_num_threads(os.cpu_count() or 1)
    with rasterio.open(image) as dataset:
        raw = dataset.read().astype(np.float32)
    x = torch.from_numpy((raw - 127.0) / 60.0)[None]
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    start = time.perf_counter()
    with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
        logits = sliding_window_inference(
            x, roi_size=(512, 512), sw_batch_size=4, predictor=net, overlap=0.25, mode="gaussian"
        )
        torch.sigmoid(logits.float())
    return x.shape[-1] * x.shape[-2] / 1e6 / (time.perf_counter() - start)


def median(values: list[float]) -> float:
    return statistics.median(values)


def size_table(
    sizes: list[int],
    size: int,
    model: Path,
    tiny: Path,
    e2e: list[dict[str, Any]],
    work: Path,
    args: argparse.Namespace,
) -> None:
    header = f"{'size':>7} {'model':>10} {'worker peak RSS GB':>19} {'client +GB':>11}"
    print(f"{'':4} {header} {'s/Mpx':>8}")
    runs = [(s, model, "base16") for s in sizes if s < 32768]
    if 32768 in sizes:
        runs += [(8192, tiny, "tiny"), (32768, tiny, "tiny")]
    for s, weights, name in runs:
        if s == size and weights == model:
            results = e2e  # the P1 runs already measured this size
        else:
            path = synthetic_geotiff(work / f"synthetic_{s}.tif", s)
            results = [
                end_to_end(path, weights, work / f"out_{s}.zarr", args.tile, "auto")
                for _ in range(args.repeats)
            ]
        rss = median([r["rss"] for r in results]) / 1e9
        grown = median([r["client"] for r in results]) / 1e9
        s_mpx = median([r["seconds"] / r["mpx"] for r in results])
        print(f"P4/5 {s:>6}² {name:>10} {rss:19.2f} {grown:11.2f} {s_mpx:8.3f}")
        shutil.rmtree(work / f"out_{s}.zarr", ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4096^2 image; P4/P5 at 2048, 4096")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--tile", type=int, default=2048)
    parser.add_argument("--sizes", type=int, nargs="*", default=None, help="P4/P5 sizes")
    parser.add_argument("--size", type=int, default=None, help="override the P1-P3 image size")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    print("command:", " ".join([Path(sys.executable).name, *sys.argv]))
    print(
        f"machine: {os.cpu_count()} cores (shared with other jobs), "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}"
    )
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_predict_"))
    work.mkdir(parents=True, exist_ok=True)
    size = args.size or (4096 if args.quick else 16384)
    sizes = args.sizes or ([2048, 4096] if args.quick else [4096, 8192, 16384, 32768])
    model = make_model(work / "unet16x4.safetensors", 16, 4)
    tiny = make_model(work / "unet4x2.safetensors", 4, 2)
    image = synthetic_geotiff(work / f"synthetic_{size}.tif", size)
    info, _ = describe_model(str(model))
    print(
        f"image {size}^2 x3 uint8; model UNet base 16 depth 4 (halo {info.halo}); tile {args.tile}"
    )
    from pipeline.infer import resolve_precision

    auto = resolve_precision("auto", "cpu")
    print(f"precision auto resolves to {auto} on this CPU")

    e2e, only, monai, only_fp32, only_auto = [], [], [], [], []
    for _ in range(args.repeats):
        e2e.append(end_to_end(image, model, work / "out.zarr", args.tile, "auto"))
        only.append(model_only(image, model, args.tile, "auto", max_tiles=2))
        monai.append(monai_mpx_s(image, model, auto))
        only_fp32.append(model_only(image, model, args.tile, "fp32", max_tiles=1))
        only_auto.append(model_only(image, model, args.tile, "auto", max_tiles=1))
    e2e_mpx_s = median([r["mpx_s"] for r in e2e])
    rows = [
        ("P1", "end-to-end / model-only", e2e_mpx_s, median(only), ">= 0.90"),
        ("P2", "ours / MONAI sliding window", e2e_mpx_s, median(monai), ">= 1.5"),
        ("P3", f"auto ({auto}) / fp32, model-only", median(only_auto), median(only_fp32), ">= 3"),
    ]
    stages = e2e[len(e2e) // 2]["report"]["seconds"]
    print(
        f"end-to-end stage seconds (summed over tasks): read {stages['read']:.1f}, "
        f"infer {stages['infer']:.1f}, write {stages['write']:.1f}; wall {stages['total']:.1f}"
    )
    print()
    print(f"{'':4} {'ratio':34} {'numerator':>12} {'denominator':>12} {'value':>7}  goal")
    for key, name, num, den, goal in rows:
        print(f"{key:4} {name:34} {num:10.3f}/s {den:10.3f}/s {num / den:7.2f}  {goal}")

    print()
    size_table(sizes, size, model, tiny, e2e, work, args)


if __name__ == "__main__":
    main()
