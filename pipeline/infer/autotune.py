"""``--patch auto``: choose the model-call size per machine, device and model, by measuring.

Per input pixel a CPU runs small windows faster than large ones (caches), but every window
carries its halo, so a small patch recomputes more context: with halo 112, a 512 patch runs a
736 window (48 % of it core) and a 2048 patch a 2272 window (81 % core). Which wins depends on
the device, the model and the precision, so it is measured, once, as *core* pixels per second
(halo redundancy included), and cached per machine + model + device + precision + halo
(``$GIGASEG_CACHE_DIR/autotune.json``, default ``~/.cache/gigaseg``). Later runs reuse the
choice without measuring; ``--patch N`` is always honoured.

Every patch size is exact (each patch reads its own halo), so the choice never changes the
output beyond float rounding; the tests check it against the reference.

Sizes are tried from small to large and the search stops when a size is slower than the one
before (throughput rises while the halo share falls, then drops once windows outgrow the
caches), so a first use costs a few model calls. The batch fills a pixel budget per call
(:data:`MAX_CALL_PIXELS`, the largest call made by default) up to :data:`MAX_BATCH`.

Every call, tuned or not, is also capped by memory: :func:`call_bytes` estimates the
activations a call holds at its peak from the width of the network's first layer, the window
and the compute precision, and sizes that do not fit :data:`CALL_MEMORY` are never tried. A
base-16 U-Net on a 2272² window (patch 2048) held 2.4 GB of activations in fp32 (a worker
peaked at 2.9-3.1 GB); with the cap a CPU worker stays under 2 GB at the default settings.
"""

from __future__ import annotations

import json
import os
import platform
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CACHE_ENV",
    "CALL_MEMORY",
    "MAX_BATCH",
    "MAX_CALL_PIXELS",
    "PEAK_FEATURE_MAPS",
    "TUNE_MIN_PIXELS",
    "cache_path",
    "call_bytes",
    "candidate_patches",
    "choose_call_size",
    "first_width",
    "fit_batch",
    "largest_fitting",
    "machine_key",
]

#: Environment variable naming the cache folder.
CACHE_ENV = "GIGASEG_CACHE_DIR"
#: Bumped when what a cached choice means changes; entries of other versions are ignored.
CACHE_VERSION = 2
#: Pixels per model call at most (a 2272² window: the default 2048 patch plus halo 112).
MAX_CALL_PIXELS = 2272 * 2272
#: Patches per model call at most.
MAX_BATCH = 4
#: Jobs smaller than this (pixels) are not worth a measurement: they use the default.
TUNE_MIN_PIXELS = 4 * 2048 * 2048
#: Largest patch tried.
MAX_PATCH = 2048
#: Activation bytes one model call may hold at its peak. The worker's other memory (torch,
#: the model, GDAL and zarr buffers, the tiles in flight) was 0.4-0.8 GB, so 1 GB of
#: activations keeps a CPU worker under the 2 GB goal at the default settings.
CALL_MEMORY = 1_000_000_000
#: Full-resolution feature maps of first-layer width held at the peak of a forward pass,
#: per input pixel (skip connections, the decoder's concatenation, conv in/out). Measured
#: on a base-16 depth-4 U-Net (peak RSS growth of one call): fp32 630, 497, 468 B per pixel
#: at 736², 1248², 2272² windows (9.8, 7.8, 7.3 maps of 16 x 4 B); bf16 361 and 266 B at
#: 736² and 2272² (11.3 and 8.3 maps of 16 x 2 B). 10 covers every window this module picks.
PEAK_FEATURE_MAPS = 10
#: Bytes per activation value by compute precision.
_VALUE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}

_LOCK = threading.Lock()


def cache_path() -> Path:
    """Return the autotune cache file (``$GIGASEG_CACHE_DIR/autotune.json``)."""
    folder = os.environ.get(CACHE_ENV) or str(Path.home() / ".cache" / "gigaseg")
    return Path(folder) / "autotune.json"


def machine_key(device: str) -> str:
    """Describe what a measurement holds for: CPU model and cores (or GPU), torch version."""
    import torch

    if device.startswith("cuda"):
        index = torch.device(device).index or 0
        hardware = torch.cuda.get_device_name(index)
    else:
        hardware = _cpu_name() or platform.processor() or platform.machine()
    threads = torch.get_num_threads()
    return f"{hardware}|{os.cpu_count()} cores|torch {torch.__version__}|{threads} threads"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def candidate_patches(tile: int, alignment: int, halo: int) -> list[int]:
    """Patch sizes worth trying: multiples of ``alignment`` from about 2·halo to the tile.

    >>> candidate_patches(2048, 16, 112)
    [256, 512, 1024, 2048]
    >>> candidate_patches(600, 16, 28)
    [64, 128, 256, 512, 592]
    """
    top = min(tile, MAX_PATCH) // alignment * alignment
    sizes = []
    size = max(alignment, 1 << max(0, (2 * halo - 1).bit_length()))
    size = max(alignment, size // alignment * alignment)
    while size < top:
        sizes.append(size)
        size *= 2
    sizes.append(top)
    return sizes


def batch_for(window: int) -> int:
    """Patches per call filling :data:`MAX_CALL_PIXELS`, between 1 and :data:`MAX_BATCH`."""
    return max(1, min(MAX_BATCH, MAX_CALL_PIXELS // max(1, window * window)))


def first_width(network: Any) -> int | None:
    """Output channels of the network's first convolution (its full-resolution width).

    Read from the first 4-D weight in registration order (``nn.Module`` or TorchScript);
    ``None`` when the network exposes no parameters (an onnxruntime session).
    """
    parameters = getattr(network, "parameters", None)
    if parameters is None:
        return None
    try:
        for weight in parameters():
            if weight.dim() == 4:
                return int(weight.shape[0])
    except (RuntimeError, TypeError, AttributeError):
        return None
    return None


def call_bytes(width: int | None, window: int, batch: int, precision: str = "fp32") -> int:
    """Estimated activation bytes at the peak of one call on ``batch`` windows of ``window``².

    ``width`` is the network's first-layer width (:func:`first_width`); ``None`` (unknown)
    estimates 0, so nothing is capped.

    >>> round(call_bytes(16, 2272, 1) / 1e9, 2), round(call_bytes(16, 1248, 1, "bf16") / 1e9, 2)
    (3.3, 0.5)
    """
    if not width:
        return 0
    per_value = _VALUE_BYTES.get(precision, 4)
    return PEAK_FEATURE_MAPS * width * per_value * window * window * batch


def fit_batch(
    width: int | None, window: int, batch: int, precision: str = "fp32", budget: int = 0
) -> int:
    """Return the largest batch ``<= batch`` whose call fits ``budget`` (:data:`CALL_MEMORY`).

    Returns 0 when not even one window fits.

    >>> fit_batch(16, 736, 4), fit_batch(16, 1248, 4), fit_batch(16, 2272, 1)
    (2, 1, 0)
    """
    budget = budget or CALL_MEMORY
    one = call_bytes(width, window, 1, precision)
    if one == 0:
        return batch
    return max(0, min(batch, budget // one))


def largest_fitting(
    patches: list[int],
    window_of: Callable[[int], int],
    width: int | None,
    precision: str = "fp32",
    budget: int = 0,
) -> list[int]:
    """Return the ``patches`` whose window fits the memory budget with batch 1 (at least one).

    >>> largest_fitting([256, 512, 1024, 2048], lambda p: p + 224, 16)
    [256, 512, 1024]
    """
    fitting = [p for p in patches if fit_batch(width, window_of(p), 1, precision, budget)]
    return fitting or patches[:1]


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path, key: str, entry: dict[str, Any]) -> None:
    """Add one entry (write to a temporary name, then rename: never a half-written cache)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _read_cache(path)
        data[key] = entry
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        tmp.replace(path)
    except OSError:
        pass  # a read-only home only costs a measurement next time


def measure(
    forward: Callable[[np.ndarray], Any],
    channels: int,
    window: int,
    batch: int,
    seconds: float = 0.0,
) -> float:
    """Seconds per model call on ``batch`` random ``window``² windows (median of the calls)."""
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (batch, channels, window, window), dtype=np.uint8)
    times = []
    deadline = time.perf_counter() + seconds
    while True:
        start = time.perf_counter()
        forward(data)
        times.append(time.perf_counter() - start)
        if time.perf_counter() >= deadline:
            break
    return float(np.median(times))


def choose_call_size(
    forward: Callable[[np.ndarray], Any],
    *,
    key: str,
    tile: int,
    alignment: int,
    halo: int,
    channels: int,
    window_of: Callable[[int], int],
    measure_call: Callable[..., float] | None = None,
    width: int | None = None,
    precision: str = "fp32",
) -> tuple[int, int, dict[str, Any]]:
    """Return ``(patch, batch, record)``: the cached choice for ``key``, else a measured one.

    Parameters
    ----------
    forward
        Raw ``(N, C, h, w)`` uint8 windows -> probabilities (the predictor of the task).
    key
        Machine + model + device + precision + halo (see :func:`machine_key`).
    tile, alignment, halo
        The task's core tile and the model's geometry.
    channels
        Input bands.
    window_of
        Patch size -> model input size (patch + 2·halo for same-padding models).
    measure_call
        Timing function (``forward, channels, window, batch`` -> seconds per call);
        :func:`measure` by default.
    width, precision
        The network's first-layer width and the compute precision: sizes whose call would
        not fit :data:`CALL_MEMORY` (:func:`call_bytes`) are not tried, and a cached choice
        that no longer fits is measured again.
    """
    measure_call = measure_call or measure
    path = cache_path()
    full_key = f"v{CACHE_VERSION}|{key}|tile<={min(tile, MAX_PATCH)}"
    with _LOCK:
        patches = largest_fitting(
            candidate_patches(tile, alignment, halo), window_of, width, precision
        )
        cached = _read_cache(path).get(full_key)
        if (
            cached
            and int(cached.get("patch", 0)) in patches
            and fit_batch(width, window_of(int(cached["patch"])), int(cached["batch"]), precision)
            == int(cached["batch"])
        ):
            return int(cached["patch"]), int(cached["batch"]), {**cached, "cached": True}
        trials: list[dict[str, Any]] = []
        best: dict[str, Any] | None = None
        warmed = False
        for patch in patches:
            window = window_of(patch)
            batch = max(1, fit_batch(width, window, batch_for(window), precision))
            if not warmed:  # first call pays one-time allocations and kernel selection
                measure_call(forward, channels, window, batch)
                warmed = True
            seconds = measure_call(forward, channels, window, batch)
            rate = batch * patch * patch / max(seconds, 1e-9)
            trial = {"patch": patch, "batch": batch, "window": window, "core_px_s": rate}
            trials.append(trial)
            if best is not None and rate < best["core_px_s"]:
                break  # past the peak
            if best is None or rate >= best["core_px_s"]:
                best = trial
        assert best is not None
        entry = {
            "patch": best["patch"],
            "batch": best["batch"],
            "trials": trials,
            "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        _write_cache(path, full_key, entry)
        return int(best["patch"]), int(best["batch"]), {**entry, "cached": False}
