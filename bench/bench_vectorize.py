"""Benchmark: chunked vectorize on Dask workers vs whole-raster rasterio.features.shapes.

Run by hand (not in tests):

    .venv/bin/python bench/bench_vectorize.py --size 16384 --objects 100000 --repeats 3
    .venv/bin/python bench/bench_vectorize.py --rss-sizes 16384 32768

Prints the command line, then tables: wall times (medians over repeats, the ratio measured
side by side in each repeat), an identity check of the two outputs, peak RSS per raster size,
and GeoJSON vs GeoParquet write time for the same features.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import rasterio
from rasterio.transform import Affine

SEED = 20261122


def make_raster(path: Path, size: int, objects: int, *, band: int = 2048) -> None:
    """Write a tiled GeoTIFF of building-like rectangles, one band of rows at a time."""
    rng = np.random.default_rng(SEED)
    h = rng.integers(6, 30, objects)
    w = rng.integers(6, 30, objects)
    r = rng.integers(0, size - 30, objects)
    c = rng.integers(0, size - 30, objects)
    cls = np.where(rng.random(objects) < 0.9, 1, 2).astype(np.uint8)
    profile = {
        "driver": "GTiff", "width": size, "height": size, "count": 1, "dtype": "uint8",
        "crs": "EPSG:32616", "transform": Affine(0.5, 0, 700000.0, 0, -0.5, 3800000.0),
        "tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "deflate",
        "BIGTIFF": "IF_SAFER",
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as ds:
        for top in range(0, size, band):
            bottom = min(top + band, size)
            block = np.zeros((bottom - top, size), np.uint8)
            sel = np.flatnonzero((r < bottom) & (r + h > top))
            for i in sel:
                block[
                    max(r[i] - top, 0) : min(r[i] + h[i] - top, bottom - top), c[i] : c[i] + w[i]
                ] = cls[i]
            ds.write(block, 1, window=rasterio.windows.Window(0, top, size, bottom - top))


def reference(path: Path) -> tuple[float, list]:
    from rasterio.features import shapes

    t0 = time.perf_counter()
    with rasterio.open(path) as ds:
        labels = ds.read(1)
        transform = ds.transform
    out = list(shapes(labels, mask=labels > 0, connectivity=4, transform=transform))
    return time.perf_counter() - t0, out


class PeakRSS:
    """Polls the RSS of this process and of its descendants (Dask nanny/worker processes)."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.driver = 0
        self.workers = 0
        self.total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            try:
                d = me.memory_info().rss
                kids = [p.memory_info().rss for p in me.children(recursive=True)]
            except psutil.Error:
                continue
            self.driver = max(self.driver, d)
            self.workers = max(self.workers, max(kids, default=0))
            self.total = max(self.total, d + sum(kids))
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def compare(ref: list, parquet: Path, width: int) -> tuple[int, int, float, bool]:
    """Polygon counts and the largest symmetric-difference area, matched by stable id."""
    import pyarrow.parquet as pq
    import shapely
    from shapely.geometry import shape

    from pipeline.vectorize import stable_ids

    geoms = np.empty(len(ref), object)
    geoms[:] = [shape(g) for g, _ in ref]
    classes = np.array([int(v) for _, v in ref])
    # stable ids are defined on pixel coordinates: undo the affine (0.5 m, no rotation)
    px = shapely.transform(
        geoms,
        lambda xy: np.column_stack([(xy[:, 0] - 700000.0) / 0.5, (xy[:, 1] - 3800000.0) / -0.5]),
    )
    ref_ids = stable_ids(px, width)
    table = pq.read_table(parquet, columns=["id", "class_id", "geometry"])
    got_ids = table.column("id").to_numpy()
    got = shapely.from_wkb(table.column("geometry").to_pylist())
    order = np.argsort(got_ids)
    ref_order = np.argsort(ref_ids)
    same_ids = bool(np.array_equal(np.sort(got_ids), np.sort(ref_ids)))
    same_cls = same_ids and bool(
        np.array_equal(table.column("class_id").to_numpy()[order], classes[ref_order])
    )
    diff = (
        float(shapely.area(shapely.symmetric_difference(got[order], geoms[ref_order])).max())
        if same_ids
        else float("nan")
    )
    return len(ref), len(got), diff, same_cls


def write_formats(parquet: Path, tmp: Path, repeats: int) -> tuple[int, float, float]:
    import pyarrow.parquet as pq
    import shapely

    from pipeline.export import FeatureBatch, Field, Schema, open_writer

    table = pq.read_table(parquet)
    geoms = np.asarray(shapely.from_wkb(table.column("geometry").to_pylist()), object)
    cols = {n: np.asarray(table.column(n).to_pylist(), dtype=object if n == "class" else None)
            for n in table.column_names if n != "geometry"}  # fmt: skip
    kinds = {"id": "int", "class_id": "int", "class": "str"}
    schema = Schema(tuple(Field(n, kinds.get(n, "float")) for n in cols), "EPSG:32616")  # type: ignore[arg-type]
    batches = [FeatureBatch(geoms[i : i + 4096], {n: v[i : i + 4096] for n, v in cols.items()})
               for i in range(0, len(geoms), 4096)]  # fmt: skip
    times: dict[str, list[float]] = {"geojson": [], "geoparquet": []}
    for _ in range(repeats):
        for fmt, ext in (("geojson", "geojson"), ("geoparquet", "parquet")):
            out = tmp / f"w.{ext}"
            out.unlink(missing_ok=True)
            t0 = time.perf_counter()
            writer = open_writer(out, fmt, schema)
            for b in batches:
                writer.write(b)
            writer.close()
            times[fmt].append(time.perf_counter() - t0)
    return len(geoms), statistics.median(times["geojson"]), statistics.median(times["geoparquet"])


def cpu_seconds() -> float:
    """User + system CPU time of this process and its descendants (the Dask workers)."""
    me = psutil.Process()
    total = 0.0
    for proc in [me, *me.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def _cluster(workers: int) -> tuple[Any, Any]:
    """The LocalCluster vectorize's runner would start (pipeline.runner), kept across repeats."""
    from distributed import Client

    from pipeline.runner import local_cluster

    cluster = local_cluster(workers, 1, kind="python", dashboard_address=None)
    return cluster, Client(cluster)


def speed(args: argparse.Namespace, tmp: Path) -> None:
    from pipeline.vectorize import vectorize

    tif = tmp / "labels.tif"
    t0 = time.perf_counter()
    make_raster(tif, args.size, args.objects)
    took = time.perf_counter() - t0
    print(f"raster {args.size}² with {args.objects} rectangles written in {took:.1f} s")
    rows = []
    cluster, client = _cluster(args.workers)
    with cluster, client:
        for rep in range(args.repeats):
            load = psutil.getloadavg()[0]
            c0 = cpu_seconds()
            t_ref, ref = reference(tif)
            c1 = cpu_seconds()
            out = tmp / "out.parquet"
            out.unlink(missing_ok=True)
            t0 = time.perf_counter()
            report = vectorize(tif, out, chunk=args.chunk, client=client, progress=False)
            t_chunk = time.perf_counter() - t0
            c2 = cpu_seconds()
            cpu_ratio = (c2 - c1) / (c1 - c0)
            rows.append((t_ref, t_chunk, t_ref / t_chunk, load, c1 - c0, c2 - c1, cpu_ratio,
                         args.workers / max(cpu_ratio, 1.0)))  # fmt: skip
            if rep == 0:
                n_ref, n_got, diff, same = compare(ref, out, args.size)
                detail = report.to_dict()
            del ref
    print()
    print(f"| {args.size}² labels, {args.workers} workers, chunk {args.chunk} | median | runs |")
    print("|---|---|---|")
    names = [
        "whole-raster shapes, 1 process (s)",
        f"chunked vectorize, {args.workers} workers (s)",
        "speed-up (whole / chunked)",
        "load average (1 min) at start",
        "CPU s, whole-raster shapes",
        "CPU s, chunked (driver + workers)",
        "CPU ratio chunked / whole (work overhead)",
        f"speed-up bound on {args.workers} idle cores (workers / CPU ratio)",
    ]
    for i, name in enumerate(names):
        vals = [r[i] for r in rows]
        runs = ", ".join(f"{v:.2f}" for v in vals)
        print(f"| {name} | {statistics.median(vals):.2f} | {runs} |")
    print()
    print(
        f"identity: reference {n_ref} polygons, chunked {n_got}; same ids and classes: "
        f"{same}; max symmetric-difference area {diff} m²"
    )
    print(
        f"chunked run detail: border pieces {detail['border_pieces']} -> merged "
        f"{detail['merged_features']}; seconds {detail['seconds']}"
    )
    n, t_json, t_pq = write_formats(tmp / "out.parquet", tmp, args.repeats)
    print()
    print(f"| writing {n} features (same batches) | median s | features/s |")
    print("|---|---|---|")
    print(f"| GeoJSON (streamed) | {t_json:.2f} | {n / t_json:,.0f} |")
    print(f"| GeoParquet (row groups) | {t_pq:.2f} | {n / t_pq:,.0f} |")
    print(f"| ratio GeoJSON / GeoParquet | {t_json / t_pq:.1f} | |")
    tif.unlink()


def rss(args: argparse.Namespace, tmp: Path) -> None:
    from pipeline.vectorize import vectorize

    print()
    print(
        "| raster | objects | chunk | wall s | peak RSS driver | peak RSS largest worker "
        f"| peak RSS total ({args.workers} workers) |"
    )
    print("|---|---|---|---|---|---|---|")
    mib = 2**20
    for size in args.rss_sizes:
        objects = int(args.objects * (size / args.size) ** 2)
        tif = tmp / f"rss{size}.tif"
        make_raster(tif, size, objects)
        out = tmp / f"rss{size}.parquet"
        cluster, client = _cluster(args.workers)
        with cluster, client, PeakRSS() as peak:
            t0 = time.perf_counter()
            vectorize(tif, out, chunk=args.chunk, client=client, progress=False)
            wall = time.perf_counter() - t0
        print(
            f"| {size}² | {objects} | {args.chunk} | {wall:.1f} | {peak.driver / mib:.0f} MiB "
            f"| {peak.workers / mib:.0f} MiB | {peak.total / mib:.0f} MiB |"
        )
        tif.unlink()
        out.unlink()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=16384)
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=4096)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--rss-sizes",
        type=int,
        nargs="*",
        default=None,
        help="raster sizes for the peak-RSS table (objects scale with area)",
    )
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args()
    print("$ " + " ".join([Path(sys.executable).name, *sys.argv]))
    print(f"machine: {psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB")
    with tempfile.TemporaryDirectory(dir=".") as tmpdir:
        if not args.skip_speed:
            speed(args, Path(tmpdir))
        if args.rss_sizes:
            rss(args, Path(tmpdir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
