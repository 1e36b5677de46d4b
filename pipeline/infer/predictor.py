"""Block -> tensor -> probabilities: one model on one device, at one precision.

A :class:`Predictor` normalises raw pixels as the checkpoint says, runs the network under
``torch.inference_mode()`` (or onnxruntime), and applies the output activation in float32.
Model calls in one process are serialised by :data:`MODEL_CALLS`, so a worker running two
tasks at a time reads the next window while the current one is in the model.
"""

from __future__ import annotations

import functools
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.errors import ConfigError
from pipeline.infer.model import ModelInfo

__all__ = [
    "MODEL_CALLS",
    "PRECISIONS",
    "Predictor",
    "activate",
    "cpu_supports_bf16",
    "model_seconds",
    "resolve_device",
    "resolve_precision",
]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")

#: At most one forward pass at a time per process: the others read and write meanwhile.
MODEL_CALLS = threading.Semaphore(1)

_MODEL_TIME = threading.local()


def model_seconds(reset: bool = False) -> float:
    """Seconds this thread spent inside model calls (waiting for the model excluded)."""
    value = float(getattr(_MODEL_TIME, "seconds", 0.0))
    if reset:
        _MODEL_TIME.seconds = 0.0
    return value


class _Timed:
    """Hold :data:`MODEL_CALLS` and add the time held to this thread's model seconds."""

    def __enter__(self) -> None:
        MODEL_CALLS.acquire()
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        _MODEL_TIME.seconds = model_seconds() + time.perf_counter() - self.start
        MODEL_CALLS.release()


@functools.cache
def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bf16 arithmetic (AMX or AVX-512-BF16)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return bool(flags & {"amx_bf16", "avx512_bf16"})


def resolve_device(device: str) -> str:
    """Turn ``"auto"`` into ``"cuda"`` when a GPU is present, else ``"cpu"``; check the rest."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} requested but no CUDA GPU is available")
        return device
    raise ConfigError(f"device {device!r} is not one of auto, cpu, cuda, cuda:N")


def resolve_precision(precision: str, device: str) -> str:
    """Turn ``"auto"`` into bf16 where the hardware runs it natively, fp32 otherwise."""
    import torch

    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_supports_bf16() else "fp32"


def activate(logits: npt.NDArray[np.float32], activation: str) -> npt.NDArray[np.float32]:
    """Sigmoid or softmax over axis 1 of ``(N, K, H, W)`` logits, in float32."""
    if activation == "sigmoid":
        # exp of -|x| only, so large logits of either sign never overflow (no warnings)
        small = np.exp(-np.abs(logits))
        return np.asarray(
            np.where(logits >= 0, 1.0 / (1.0 + small), small / (1.0 + small)), dtype=np.float32
        )
    shifted = logits - logits.max(axis=1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=1, keepdims=True)
    return np.asarray(shifted, dtype=np.float32)


class Predictor:
    """A network on a device that maps raw windows to probabilities.

    Parameters
    ----------
    network
        A ``torch.nn.Module`` / TorchScript module, or an onnxruntime session.
    info
        The model's :class:`ModelInfo` (normalisation, activation).
    device, precision
        As the ``predict`` options (``"auto"`` resolved here).
    threads
        Intra-op threads for this process (unchanged when None).
    """

    def __init__(
        self,
        network: Any,
        info: ModelInfo,
        *,
        device: str = "auto",
        precision: str = "auto",
        threads: int | None = None,
    ) -> None:
        self.network = network
        self.info = info
        self.onnx = info.kind == "onnx"
        if self.onnx:
            self.device, self.precision = "cpu", "fp32"
            self.input_name = network.get_inputs()[0].name
        else:
            import torch

            if threads:
                torch.set_num_threads(threads)
            self.device = resolve_device(device)
            self.precision = resolve_precision(precision, self.device)
            self.channels_last = self.precision != "fp32" or self.device.startswith("cuda")
            if isinstance(network, torch.nn.Module):
                network.to(self.device)
                if self.channels_last:
                    network.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        mean, std = info.mean, info.std
        self.mean = None if mean is None else np.asarray(mean, np.float32)[None, :, None, None]
        self.std = None if std is None else np.asarray(std, np.float32)[None, :, None, None]

    def normalise(self, raw: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        """``(raw - mean) / std`` per band, as float32."""
        batch = raw.astype(np.float32)
        if self.mean is not None:
            batch -= self.mean
        if self.std is not None:
            batch /= self.std
        return batch

    def logits(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Run the network on a normalised ``(N, C, H, W)`` batch; float32 logits."""
        if self.onnx:
            with _Timed():
                out = self.network.run(None, {self.input_name: batch})[0]
            return np.asarray(out, dtype=np.float32)
        import torch

        tensor = torch.from_numpy(batch)
        cuda = self.device.startswith("cuda")
        if cuda:
            tensor = tensor.pin_memory()
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        with _Timed(), torch.inference_mode():
            tensor = tensor.to(self.device, non_blocking=cuda)
            if self.channels_last:
                tensor = tensor.contiguous(memory_format=torch.channels_last)
            device_type = "cuda" if cuda else "cpu"
            with torch.autocast(device_type, dtype=dtype, enabled=dtype is not None):
                out = self.network(tensor)
            if isinstance(out, (tuple, list)):
                out = out[0]
            out = out.float().contiguous()
            result = out.to("cpu", non_blocking=False).numpy()
        return np.asarray(result, dtype=np.float32)

    def __call__(self, raw: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        """Raw ``(N, C, H, W)`` windows -> ``(N, K, H', W')`` probabilities."""
        return activate(self.logits(self.normalise(raw)), self.info.activation)
