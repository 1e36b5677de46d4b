"""Progress across every scene of a run, and the cluster's peak worker memory.

Scenes run concurrently on one cluster, so a single bar counts tiles over all of them: each
scene's ``pipeline.predict`` calls ``on_tile(done, total)`` and :class:`RunProgress` sums the
latest counts. Totals grow as scenes start (a scene's total is known once its grid is planned),
so the bar's total is the sum of known totals, or the planned estimate when that is larger.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["MemoryMonitor", "RunProgress"]


class RunProgress:
    """A thread-safe tqdm bar over all scenes: tiles done / total, Mpx/s and ETA.

    Parameters
    ----------
    estimates
        Per scene: ``(planned tiles or None, megapixels or None)``.
    enabled
        Draw the bar (``False`` keeps the counts only).
    """

    def __init__(
        self, estimates: Sequence[tuple[int | None, float | None]], *, enabled: bool = True
    ) -> None:
        self._lock = threading.Lock()
        self._planned = [t or 0 for t, _ in estimates]
        self._mpx = [m for _, m in estimates]
        self._done = [0] * len(estimates)
        self._total: list[int | None] = [None] * len(estimates)
        self._start = time.perf_counter()
        self._bar: Any = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(
                total=max(sum(self._planned), 1),
                unit="tile",
                desc=f"{len(estimates)} scene{'s' if len(estimates) != 1 else ''}",
                dynamic_ncols=True,
                mininterval=0.2,
            )

    def callback(self, scene: int) -> Callable[[int, int], None]:
        """Return the ``on_tile(done, total)`` callback for scene number ``scene``."""

        def on_tile(done: int, total: int) -> None:
            self.update(scene, done, total)

        return on_tile

    def update(self, scene: int, done: int, total: int) -> None:
        """Record that ``scene`` has ``done`` of ``total`` tiles finished."""
        with self._lock:
            self._done[scene] = max(self._done[scene], int(done))
            self._total[scene] = int(total)
            self._refresh()

    def finish_scene(self, scene: int) -> None:
        """Mark a scene as fully done (e.g. skipped because its store is complete)."""
        with self._lock:
            total = self._total[scene] if self._total[scene] is not None else self._planned[scene]
            self._total[scene] = total
            self._done[scene] = total or 0
            self._refresh()

    @property
    def done(self) -> int:
        """Tiles done over all scenes."""
        return sum(self._done)

    @property
    def total(self) -> int:
        """Tiles in all scenes (known totals, else the planned ones)."""
        pairs = zip(self._total, self._planned, strict=True)
        return sum(t if t is not None else p for t, p in pairs)

    def megapixels_done(self) -> float:
        """Megapixels done, pro rata of each scene's tiles."""
        mpx = 0.0
        for done, total, planned, scene_mpx in zip(
            self._done, self._total, self._planned, self._mpx, strict=True
        ):
            tiles = total if total is not None else planned
            if scene_mpx and tiles:
                mpx += scene_mpx * done / tiles
        return mpx

    def _refresh(self) -> None:
        if self._bar is None:
            return
        total = max(self.total, 1)
        if self._bar.total != total:
            self._bar.total = total
        self._bar.n = self.done
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        self._bar.set_postfix_str(f"{self.megapixels_done() / elapsed:.2f} Mpx/s", refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        """Close the bar (leaves the last state on screen)."""
        if self._bar is not None:
            with self._lock:
                self._refresh()
                self._bar.close()
                self._bar = None


class MemoryMonitor:
    """Sample workers' memory from the scheduler's heartbeats in a background thread.

    Reading ``scheduler_info()`` costs no task, so sampling works on any cluster; the peak is
    as fine as the sampling interval (a short spike between two samples can be missed).

    Parameters
    ----------
    client
        A connected :class:`distributed.Client`.
    interval
        Seconds between samples.
    """

    def __init__(self, client: Any, interval: float = 0.5) -> None:
        self._client = client
        self._interval = interval
        self._samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="gigaseg-memory", daemon=True)

    def __enter__(self) -> MemoryMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sample()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self._interval)

    def sample(self) -> None:
        """Take one sample now (the largest worker's memory, in bytes)."""
        try:
            workers = self._client.scheduler_info()["workers"]
        except Exception:  # a closed or busy client must not fail the run
            return
        memory = [int(w.get("metrics", {}).get("memory") or 0) for w in workers.values()]
        if memory:
            self._samples.append((time.perf_counter(), max(memory)))

    def peak(self, start: float | None = None, stop: float | None = None) -> int | None:
        """Largest worker memory seen (between ``start`` and ``stop``, perf_counter times)."""
        values = [
            m
            for t, m in self._samples
            if (start is None or t >= start) and (stop is None or t <= stop)
        ]
        return max(values) if values else None
