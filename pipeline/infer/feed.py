"""Keep the model busy: a bounded queue of normalised batches ahead of one model thread.

On an accelerator the network is cheap and the CPU side (read, decode, normalise, copy,
activate, encode, compress, write) sets the pace. A :class:`Feed` shapes a worker process for
that:

- the *task threads* (Dask worker threads, or the in-process pool) are the readers: each reads
  its tile's window, cuts it into batches, normalises them and puts them on a queue of at most
  ``depth`` batches (the bound keeps memory flat and gives backpressure);
- one *model thread* per process owns the device: it takes batches in order, and on CUDA starts
  the host-to-device copy of the next batch (pinned host memory, a second stream) while the
  current one is in the forward pass;
- activation, class labels and the stored encoding are computed on the device
  (:meth:`Predictor.encode <pipeline.infer.predictor.Predictor.encode>`), so only uint8 (or
  the requested float) comes back; a model whose output is numpy (ONNX, a card-adapted one)
  hands its output back and the reader thread that asked for it activates and encodes it
  (:func:`~pipeline.infer.predictor.encode_host`), so the model thread only runs the model;
- writing and compressing stay in the task threads, off the model thread.

The feed also measures how busy the model thread is, which the run report turns into "the model
bounds this run" or "reading and writing bound this run".
"""

from __future__ import annotations

import math
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.infer.predictor import Predictor

__all__ = [
    "Encoded",
    "Feed",
    "FeedStats",
    "Pending",
    "bottleneck",
    "get_feed",
    "note_reader_seconds",
    "reader_seconds",
    "recommend_readers",
]

#: ``(stored, labels)``: ``(N, K, h, w)`` stored probabilities and ``(N, h, w)`` uint8 labels.
Encoded = tuple[npt.NDArray[Any], npt.NDArray[np.uint8]]


@dataclass(frozen=True)
class FeedStats:
    """What the model thread did since the feed started.

    Attributes
    ----------
    batches
        Batches run.
    busy_s
        Seconds spent copying, in the forward pass and encoding (the model thread's work).
    high_water
        Most batches ever waiting in the queue (never above the feed's ``depth``).
    """

    batches: int
    busy_s: float
    high_water: int


class Feed:
    """One model thread fed through a bounded queue; see the module docstring.

    Parameters
    ----------
    predictor
        The model on its device.
    depth
        Normalised batches that may wait ahead of the model (at least 1).

    Notes
    -----
    ``feed.submit(raw, "uint8", 0.5)`` returns a future of ``(stored, labels)`` for the
    batch; futures complete in submission order, one batch at a time on the model thread.
    """

    def __init__(self, predictor: Predictor, depth: int = 2) -> None:
        if depth < 1:
            raise ValueError(f"feed depth must be at least 1, got {depth}")
        self.predictor = predictor
        self.depth = depth
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._lock = threading.Lock()
        self._batches = 0
        self._busy = 0.0
        self._high_water = 0
        self._thread = threading.Thread(target=self._loop, name="gigaseg-model", daemon=True)
        self._thread.start()

    def submit(self, raw: npt.NDArray[Any], probabilities: str, threshold: float) -> Pending:
        """Normalise ``raw`` here (the reader's thread) and queue it; blocks while full.

        Parameters
        ----------
        raw
            ``(N, C, h, w)`` raw windows.
        probabilities, threshold
            The stored encoding and the one-class threshold (see
            :meth:`Predictor.encode <pipeline.infer.predictor.Predictor.encode>`).
        """
        start = time.perf_counter()
        batch = self.predictor.stage(self.predictor.normalise(raw))
        prepared = time.perf_counter()
        future: Future[Any] = Future()
        self._queue.put((batch, probabilities, threshold, future))
        note_reader_seconds(prepared - start, time.perf_counter() - prepared)
        with self._lock:
            self._high_water = max(self._high_water, self._queue.qsize())
        return Pending(future, self.predictor, probabilities, threshold)

    def stats(self) -> FeedStats:
        """Counters of the model thread so far."""
        with self._lock:
            return FeedStats(self._batches, self._busy, self._high_water)

    def close(self) -> None:
        """Stop the model thread once the queued batches are done."""
        self._queue.put(None)
        self._thread.join()

    def _loop(self) -> None:
        upcoming: Any = None
        while True:
            item = upcoming if upcoming is not None else self._upload(self._queue.get())
            upcoming = None
            if item is _STOP:
                return
            if not self._queue.empty():  # start copying the next batch while this one runs
                upcoming = self._upload(self._queue.get_nowait())
            tensor, probabilities, threshold, future, copy_s = item
            if not future.set_running_or_notify_cancel():  # its task gave up (interrupted)
                continue
            start = time.perf_counter()
            try:
                if isinstance(tensor, BaseException):  # its copy to the device failed
                    raise tensor
                result = self.predictor.run_staged(tensor, probabilities, threshold)
            except BaseException as exc:  # handed to the task that submitted the batch
                future.set_exception(exc)
            else:
                future.set_result(result)
            with self._lock:
                self._batches += 1
                self._busy += time.perf_counter() - start + copy_s

    def _upload(self, item: Any) -> Any:
        if item is None:
            return _STOP
        batch, probabilities, threshold, future = item
        start = time.perf_counter()
        try:
            tensor = self.predictor.upload(batch)
        except BaseException as exc:
            tensor = exc
        return (tensor, probabilities, threshold, future, time.perf_counter() - start)


_STOP = object()


class Pending:
    """A batch handed to a :class:`Feed`: ``result()`` gives its ``(stored, labels)``.

    The model thread completes ``future`` with :meth:`Predictor.run_staged
    <pipeline.infer.predictor.Predictor.run_staged>`; :meth:`result` finishes it in the
    calling (reader) thread, which for a host-encoded model is the activation and encoding.
    """

    def __init__(
        self, future: Future[Any], predictor: Predictor, probabilities: str, threshold: float
    ) -> None:
        self.future = future
        self.predictor = predictor
        self.probabilities = probabilities
        self.threshold = threshold

    def result(self, timeout: float | None = None) -> Encoded:
        """Wait for the model, then encode here if the device did not (see the class)."""
        return self.predictor.finish(
            self.future.result(timeout), self.probabilities, self.threshold
        )

    def cancel(self) -> bool:
        """Withdraw the batch if the model thread has not started it."""
        return self.future.cancel()


_THREAD = threading.local()


def reader_seconds(reset: bool = False) -> tuple[float, float]:
    """Seconds this thread spent normalising batches and waiting for room in a queue."""
    value = (float(getattr(_THREAD, "normalise", 0.0)), float(getattr(_THREAD, "wait", 0.0)))
    if reset:
        _THREAD.normalise = _THREAD.wait = 0.0
    return value


def note_reader_seconds(normalise: float, wait: float = 0.0) -> None:
    """Add to this thread's normalising and waiting seconds (see :func:`reader_seconds`)."""
    normalised, waited = reader_seconds()
    _THREAD.normalise = normalised + normalise
    _THREAD.wait = waited + wait


_FEEDS: dict[Any, Feed] = {}
_FEEDS_LOCK = threading.Lock()


def get_feed(key: Any, predictor: Predictor, depth: int) -> Feed:
    """Return this process's feed for ``key`` (one model thread per model and device)."""
    with _FEEDS_LOCK:
        feed = _FEEDS.get((key, depth))
        if feed is None:
            feed = _FEEDS[(key, depth)] = Feed(predictor, depth)
        return feed


def bottleneck(
    megapixels: float,
    wall_s: float,
    model_s: float,
    io_s: float,
    model_threads: int,
    reader_threads: int,
) -> dict[str, Any]:
    """Say what bounds a run, from its summed stage seconds.

    Parameters
    ----------
    megapixels
        Core pixels computed.
    wall_s
        Wall-clock seconds of the tile phase.
    model_s
        Seconds the model threads were busy (summed over workers).
    io_s
        Seconds the reader threads spent reading, normalising, writing (summed).
    model_threads, reader_threads
        How many of each ran at once (workers; workers x task threads).

    Returns
    -------
    dict
        ``model_busy`` (fraction of the wall time the model threads worked), ``bound``
        (``"model"`` or ``"input/output"``), the two ceilings in Mpx/s (the rate if only the
        model, or only reading and writing, limited the run) and one line of ``advice``.

    Examples
    --------
    >>> b = bottleneck(100.0, 10.0, 19.0, 8.0, 2, 4)
    >>> b["bound"], round(b["model_busy"], 2), round(b["model_mpx_per_s"], 1)
    ('model', 0.95, 10.5)
    """
    model_threads = max(1, model_threads)
    reader_threads = max(1, reader_threads)
    busy = model_s / (wall_s * model_threads) if wall_s > 0 else 0.0
    model_rate = megapixels / (model_s / model_threads) if model_s > 0 else math.inf
    io_rate = megapixels / (io_s / reader_threads) if io_s > 0 else math.inf
    bound = "model" if busy >= 0.8 or model_rate <= io_rate else "input/output"
    if bound == "model":
        advice = "the model is the limit: a faster device, lower precision or larger batch helps"
    else:
        readers = recommend_readers(model_s, io_s, reader_threads)
        advice = (
            f"the model waited {100 * (1 - busy):.0f}% of the time for reads and writes: "
            f"about {readers} reader threads per model would keep it busy"
        )
    return {
        "model_busy": round(min(1.0, busy), 3),
        "bound": bound,
        "model_mpx_per_s": round(model_rate, 3) if math.isfinite(model_rate) else None,
        "io_mpx_per_s": round(io_rate, 3) if math.isfinite(io_rate) else None,
        "advice": advice,
    }


def recommend_readers(model_s: float, io_s: float, current: int = 1) -> int:
    """Reader threads per model thread that keep the model busy (from measured seconds).

    The model needs a new batch every ``model_s / n`` seconds; one reader delivers one every
    ``io_s / n``. So ``ceil(io_s / model_s)`` readers keep up, plus one so a slow tile does
    not stall the queue.

    >>> recommend_readers(model_s=1.0, io_s=3.5)
    5
    >>> recommend_readers(model_s=10.0, io_s=1.0)
    2
    """
    if model_s <= 0:
        return max(1, current)
    return max(1, math.ceil(io_s / model_s) + 1)
