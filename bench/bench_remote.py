"""Benchmark: ``gigaseg predict`` of one COG from a loopback HTTP server vs the local file.

    .venv/bin/python bench/bench_remote.py                 # 4096^2 JPEG COG, 3 repeats
    .venv/bin/python bench/bench_remote.py --size 2048 --repeats 2

The same COG is predicted by the ``gigaseg`` command (a subprocess, timed as a user times
it) from its local path and from ``http://127.0.0.1:PORT/...`` served by the Range-capable
test server (``tests/servers.py``), alternating local / remote in one run. Printed: median
wall seconds and Mpx/s of each, the remote / local throughput ratio (goal >= 0.9), and the
requests and bytes the server counted per tile (task) and per 512x512 block of the file.
The two stores are checked to be identical. ``--server nginx`` serves the COG from a
third-party server instead (``nginx`` on PATH or in /usr/sbin, e.g. Debian's ``nginx-light``),
started on 127.0.0.1 with a temporary config; requests are counted from its access log.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import socket
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
import zarr
from affine import Affine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import unet  # noqa: E402
from tests.servers import RangeServer  # noqa: E402


def write_cog(path: Path, size: int) -> Path:
    """A 3-band uint8 JPEG COG (512 blocks, overviews) with smooth structure plus noise."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    base = 127 + 60 * np.sin(xx / 97.0) * np.cos(yy / 53.0)
    data = np.stack([base, base * 0.8 + 20, 255 - base]) + rng.normal(0, 12, (3, size, size))
    profile = {
        "driver": "COG",
        "width": size,
        "height": size,
        "count": 3,
        "dtype": "uint8",
        "crs": "EPSG:32618",
        "transform": Affine(0.5, 0, 500000, 0, -0.5, 4000000),
        "blocksize": 512,
        "compress": "JPEG",
        "quality": 90,
    }
    with rasterio.open(path, "w", **profile) as dataset:
        dataset.write(np.clip(data, 0, 255).astype(np.uint8))
    return path


def make_model(path: Path, base: int, depth: int) -> Path:
    """A random-weight U-Net checkpoint (speed does not depend on the weights)."""
    torch.manual_seed(0)
    model = unet.UNet(in_channels=3, classes=1, base=base, depth=depth)
    unet.save(model, path, classes=["x"], bands=[1, 2, 3], mean=[127.0] * 3, std=[60.0] * 3)
    return path


class NginxServer:
    """``nginx`` serving ``root`` on a free 127.0.0.1 port, counting requests from its log."""

    def __init__(self, root: Path, work: Path) -> None:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(binary).exists():
            raise SystemExit("--server nginx: no nginx found (apt-get install nginx-light)")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        # nginx's workers run as an unprivileged user: the served folders must be readable
        work.chmod(0o755)
        root.chmod(0o755)
        self.prefix = work / "nginx"
        self.prefix.mkdir()
        self.log = self.prefix / "access.log"
        temp = " ".join(
            f"{kind}_temp_path {self.prefix / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        config = self.prefix / "nginx.conf"
        config.write_text(
            f"daemon off; worker_processes 1; pid {self.prefix / 'nginx.pid'};\n"
            f"error_log {self.prefix / 'error.log'};\n"
            "events { worker_connections 64; }\n"
            f"http {{ access_log {self.log} combined; {temp}\n"
            f"  server {{ listen 127.0.0.1:{self.port}; root {root}; }} }}\n"
        )
        self._process = subprocess.Popen(
            [binary, "-c", str(config), "-p", str(self.prefix)], stderr=subprocess.DEVNULL
        )
        for _ in range(100):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            time.sleep(0.05)
        self._offset = 0

    def url(self, name: str) -> str:
        """URL of a file under ``root``."""
        return f"http://127.0.0.1:{self.port}/{name}"

    def reset(self) -> None:
        """Count from here on."""
        self._offset = self.log.stat().st_size if self.log.exists() else 0

    def counts(self) -> tuple[int, int]:
        """Requests and body bytes logged since :meth:`reset`."""
        with self.log.open("rb") as handle:
            handle.seek(self._offset)
            lines = handle.read().decode().splitlines()
        sizes = [int(line.split('" ', 1)[1].split()[1]) for line in lines if '" ' in line]
        return len(lines), sum(sizes)

    def stop(self) -> None:
        """Stop nginx (the process this object started)."""
        self._process.terminate()
        self._process.wait(timeout=10)


def run_predict(source: str, model: Path, out: Path, tile: int) -> float:
    """Time ``gigaseg predict`` as a subprocess; return wall seconds."""
    command = [str(ROOT / ".venv" / "bin" / "gigaseg"), "predict", source, "--model", str(model)]
    command += ["--out", str(out), "--tile", str(tile), "--overwrite", "--no-progress"]
    if not Path(command[0]).exists():
        command[:1] = [sys.executable, "-m", "workflows"]
    started = time.perf_counter()
    done = subprocess.run(command, check=False, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"gigaseg predict {source} failed: {done.stderr.strip()[-500:]}")
    return time.perf_counter() - started


def report(
    args: argparse.Namespace,
    work: Path,
    cog: Path,
    times: dict[str, list[float]],
    counts: list[tuple[int, int]],
) -> None:
    """Print the machine, the table, the ratio and the request counts."""
    local = zarr.open_group(str(work / "local.zarr"), mode="r")
    remote = zarr.open_group(str(work / "http.zarr"), mode="r")
    same = np.array_equal(local["labels"][...], remote["labels"][...])
    mpx = args.size * args.size / 1e6
    tiles = math.ceil(args.size / args.tile) ** 2
    blocks = math.ceil(args.size / 512) ** 2
    requests = statistics.median(c[0] for c in counts)
    nbytes = statistics.median(c[1] for c in counts)
    med = {side: statistics.median(values) for side, values in times.items()}
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    cpu = names[0] if names else "unknown"
    print(f"CPU: {cpu}; {os.cpu_count()} cores; load average {os.getloadavg()}")
    print(f"COG {args.size}^2 JPEG, 512 blocks, {cog.stat().st_size / 1e6:.1f} MB; "
          f"U-Net base {args.base} depth {args.depth}; --tile {args.tile} ({tiles} tiles); "
          f"{args.repeats} repeats, medians; server: {args.server}; "
          f"stores identical: {same}")  # fmt: skip
    print()
    print("| source | wall s (median) | Mpx/s | runs (s) |")
    print("|---|---|---|---|")
    for side in ("local", "http"):
        runs = ", ".join(f"{t:.1f}" for t in times[side])
        print(f"| {side} | {med[side]:.1f} | {mpx / med[side]:.3f} | {runs} |")
    print()
    print(f"http / local throughput: {med['local'] / med['http']:.3f} (goal >= 0.9)")
    print(f"requests: {requests:.0f} per run, {requests / tiles:.1f} per tile, "
          f"{requests / blocks:.2f} per 512^2 block; bytes: {nbytes / 1e6:.1f} MB per run "
          f"({nbytes / cog.stat().st_size:.2f}x the file)")  # fmt: skip


def main() -> None:
    """Run the comparison and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="COG side in pixels (4096)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side (3)")
    parser.add_argument("--tile", type=int, default=2048, help="gigaseg --tile (2048)")
    parser.add_argument("--base", type=int, default=8, help="U-Net base width (8)")
    parser.add_argument("--depth", type=int, default=3, help="U-Net depth (3)")
    parser.add_argument(
        "--server",
        choices=("python", "nginx"),
        default="python",
        help="HTTP server: the tests' Range server (python) or nginx",
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_remote_"))
    try:
        www = work / "www"
        www.mkdir()
        cog = write_cog(www / "scene.tif", args.size)
        model = make_model(work / "model.safetensors", args.base, args.depth)
        server: Any = (
            RangeServer(www).start() if args.server == "python" else NginxServer(www, work)
        )
        url = server.url("scene.tif")
        times: dict[str, list[float]] = {"local": [], "http": []}
        counts: list[tuple[int, int]] = []
        try:
            for _ in range(args.repeats):
                times["local"].append(run_predict(str(cog), model, work / "local.zarr", args.tile))
                if args.server == "python":
                    server.counter.reset()
                else:
                    server.reset()
                times["http"].append(run_predict(url, model, work / "http.zarr", args.tile))
                if args.server == "python":
                    requests = sum(server.counter.requests.values())
                    counts.append((requests, sum(server.counter.nbytes.values())))
                else:
                    counts.append(server.counts())
        finally:
            server.stop()
        report(args, work, cog, times, counts)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
