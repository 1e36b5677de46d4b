"""Object F1 matching time (SpaceNet rule, STRtree candidates) for 1e3..1e5 buildings.

Run: .venv/bin/python bench/object_f1.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import shapely

from pipeline.evaluate import match_objects


def scene(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n true 10-20 m buildings on a 25 m grid; predictions jittered, 10% missed, 10% extra."""
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n)))
    index = np.arange(n)
    x, y = (index % side) * 25.0, (index // side) * 25.0
    w, h = rng.uniform(10, 20, n), rng.uniform(10, 20, n)
    truth = shapely.box(x, y, x + w, y + h)
    keep = rng.random(n) > 0.1
    dx, dy = rng.normal(0, 1.5, n), rng.normal(0, 1.5, n)
    pred = shapely.box(x + dx, y + dy, x + dx + w, y + dy + h)[keep]
    extra = rng.random(n) < 0.1
    spurious = shapely.box(x[extra] + 21, y[extra] + 21, x[extra] + 24, y[extra] + 24)
    return np.concatenate([pred, spurious]), truth


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print("command: " + " ".join([sys.executable, *sys.argv]))
    print(f"{'objects':>8}  {'median s':>9}  {'objects/s':>10}  {'F1':>6}  {'tp':>7}")
    for n in (1_000, 10_000, 100_000):
        pred, truth = scene(n)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            result = match_objects(pred, truth)
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        print(f"{n:>8}  {median:>9.3f}  {n / median:>10.0f}  {result.f1:>6.3f}  {result.tp:>7}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
