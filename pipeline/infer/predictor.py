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

from pipeline.errors import ConfigError, ModelOutputError, ModelRunError
from pipeline.infer.model import ModelInfo, pick_output
from pipeline.infer.optimize import fold_batch_norm

__all__ = [
    "MODEL_CALLS",
    "PRECISIONS",
    "NonFiniteOutputError",
    "Predictor",
    "activate",
    "cpu_supports_bf16",
    "encode_host",
    "encode_seconds",
    "model_seconds",
    "resolve_device",
    "resolve_precision",
]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")

#: At most one forward pass at a time per process: the others read and write meanwhile.
MODEL_CALLS = threading.Semaphore(1)

_MODEL_TIME = threading.local()
_ENCODE_TIME = threading.local()


class NonFiniteOutputError(ModelOutputError):
    """The model gave NaN/Inf probabilities (``count`` of them) in one batch."""

    def __init__(self, count: int) -> None:
        super().__init__(f"the model gave {count} non-finite (NaN/Inf) value(s)")
        self.count = count


def model_seconds(reset: bool = False) -> float:
    """Seconds this thread spent inside model calls (waiting for the model excluded)."""
    value = float(getattr(_MODEL_TIME, "seconds", 0.0))
    if reset:
        _MODEL_TIME.seconds = 0.0
    return value


def encode_seconds(reset: bool = False) -> float:
    """Seconds this thread spent in host activation and encoding (:meth:`Predictor.finish`)."""
    value = float(getattr(_ENCODE_TIME, "seconds", 0.0))
    if reset:
        _ENCODE_TIME.seconds = 0.0
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
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        import torch  # only a GPU needs it asked (a CPU says so in /proc/cpuinfo)

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


#: Pixels per pass of :func:`encode_host`: a block and its scratch buffers stay in the cache.
#: (CPU per 4 Mpx is flat from 2**15 to 2**18 here; the larger block takes the GIL back fewer
#: times, which matters with reader threads running beside it.)
HOST_BLOCK = 1 << 17


def encode_host(
    values: npt.NDArray[Any],
    activation: str,
    probabilities: str = "uint8",
    threshold: float = 0.5,
    *,
    activated: bool = False,
) -> tuple[npt.NDArray[Any], npt.NDArray[np.uint8]]:
    """Activation, labels and stored encoding of ``(N, K, H, W)`` model outputs, on the host.

    The same arithmetic, value for value, as :func:`activate` followed by
    :func:`~pipeline.stitch.assemble.to_labels` and
    :func:`~pipeline.store.encoding.to_stored`, but done in cache-sized blocks of
    :data:`HOST_BLOCK` pixels into reused buffers: a dozen passes over a few hundred
    kilobytes instead of as many over whole-batch temporaries (each one fresh memory).

    Parameters
    ----------
    values
        Logits, or probabilities when ``activated`` (a model card's already-applied output).
    activation
        ``"sigmoid"`` or ``"softmax"`` (the model's; anything else is read as softmax, as
        :func:`activate` does).
    probabilities
        The stored dtype: ``uint8`` holds ``round(p * 255)``, floats hold ``p``.
    threshold
        Labels are ``p >= threshold`` for one sigmoid channel, else the argmax over classes.
    activated
        ``values`` are already probabilities: used as they are (clipped for uint8).

    Returns
    -------
    tuple
        Stored ``(N, K, H, W)`` probabilities and ``(N, H, W)`` uint8 labels.

    Raises
    ------
    NonFiniteOutputError
        Some probabilities are NaN/Inf (the count over the whole batch).
    """
    values = np.ascontiguousarray(values, dtype=np.float32)
    n, k = int(values.shape[0]), int(values.shape[1])
    pixels = int(np.prod(values.shape[2:], dtype=np.int64))
    flat = values.reshape(n, k, pixels)
    stored = np.empty((n, k, pixels), probabilities)
    labels = np.empty((n, pixels), np.uint8)
    with np.errstate(over="ignore", invalid="ignore"):  # NaN/Inf are counted, not warned
        bad = _encode_blocks(flat, activation, threshold, activated, stored, labels)
    if bad:
        raise NonFiniteOutputError(bad)
    return stored.reshape(values.shape), labels.reshape((n, *values.shape[2:]))


def _encode_blocks(
    flat: npt.NDArray[np.float32],
    activation: str,
    threshold: float,
    activated: bool,
    stored: npt.NDArray[Any],
    labels: npt.NDArray[np.uint8],
) -> int:
    """Fill ``stored`` and ``labels`` block by block; return the count of non-finite values."""
    n, k, pixels = flat.shape
    step = max(1, HOST_BLOCK // k)
    probs_buf = np.empty((k, step), np.float32)
    scratch_buf = np.empty((k, step), np.float32)
    row_buf = np.empty(step, np.float32)
    mask_buf = np.empty(step, np.bool_)
    step_buf = np.empty(step, np.uint8)
    one_sigmoid = activation == "sigmoid" and k == 1
    bad = 0
    for i in range(n):
        for start in range(0, pixels, step):
            stop = min(pixels, start + step)
            x = flat[i, :, start:stop]
            if activated:
                p = x
            elif activation == "sigmoid":
                p = _sigmoid_into(x, probs_buf[:, : stop - start], scratch_buf)
            else:
                p = _softmax_into(x, probs_buf[:, : stop - start], row_buf[: stop - start])
            if not np.isfinite(np.add.reduce(p, axis=None)):  # NaN/Inf, or a huge sum
                nonfinite = int(p.size - np.count_nonzero(np.isfinite(p)))
                if nonfinite:
                    bad += nonfinite
                    continue
            if bad:  # the batch fails: only count the rest
                continue
            if one_sigmoid:
                np.greater_equal(p[0], threshold, out=labels[i, start:stop].view(np.bool_))
            else:
                _argmax_into(p, labels[i, start:stop], row_buf, mask_buf, step_buf)
            _store_block(p, stored[i, :, start:stop], scratch_buf, clip=activated)
    return bad


def _store_block(
    p: npt.NDArray[np.float32],
    target: npt.NDArray[Any],
    scratch: npt.NDArray[np.float32],
    *,
    clip: bool,
) -> None:
    """:func:`~pipeline.store.encoding.to_stored` of one block into ``target``."""
    if target.dtype != np.uint8:
        np.copyto(target, p, casting="unsafe")
        return
    scaled = scratch[:, : p.shape[1]]
    if clip:  # a sigmoid or softmax of ours is in [0, 1] already
        np.clip(p, 0.0, 1.0, out=scaled)
        np.multiply(scaled, 255.0, out=scaled)
    else:
        np.multiply(p, 255.0, out=scaled)
    np.rint(scaled, out=scaled)
    np.copyto(target, scaled, casting="unsafe")


def _sigmoid_into(
    x: npt.NDArray[np.float32], out: npt.NDArray[np.float32], scratch: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """:func:`activate`'s sigmoid of one block into ``out``: the same values, no select.

    ``where(x >= 0, 1 / (1 + s), s / (1 + s))`` with ``s = exp(-|x|)`` is one division of
    the numerator ``exp(min(x, 0))`` (exactly 1 where ``x >= 0``, exactly ``s`` where
    ``x < 0``; NaN stays NaN) by ``1 + s``: two vectorised exps cost less than a masked copy.
    """
    denominator = scratch[:, : x.shape[1]]
    np.abs(x, out=denominator)
    np.negative(denominator, out=denominator)
    np.exp(denominator, out=denominator)
    np.add(denominator, 1.0, out=denominator)
    np.minimum(x, 0.0, out=out)
    np.exp(out, out=out)
    np.divide(out, denominator, out=out)
    return out


def _argmax_into(
    p: npt.NDArray[np.float32],
    out: npt.NDArray[np.uint8],
    best: npt.NDArray[np.float32],
    greater: npt.NDArray[np.bool_],
    step: npt.NDArray[np.uint8],
) -> None:
    """``out[:] = argmax(p, axis=0)`` for a finite ``(K, b)`` block, first maximum on ties.

    A running maximum over the classes, the label moved only where a class is strictly
    greater (so ties keep the first), updated by arithmetic (``out += greater * (c - out)``,
    uint8 wrap-around cancels) rather than numpy's argmax over a non-contiguous axis.
    """
    width = p.shape[1]
    best, greater, step = best[:width], greater[:width], step[:width]
    np.copyto(best, p[0])
    out.fill(0)
    for c in range(1, p.shape[0]):
        np.greater(p[c], best, out=greater)
        np.maximum(best, p[c], out=best)
        np.subtract(c, out, out=step, dtype=np.uint8, casting="unsafe")
        np.multiply(step, greater, out=step)
        np.add(out, step, out=out)


def _softmax_into(
    x: npt.NDArray[np.float32], out: npt.NDArray[np.float32], row: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """:func:`activate`'s softmax over axis 0 of one ``(K, b)`` block into ``out``."""
    np.maximum.reduce(x, axis=0, out=row)
    np.subtract(x, row, out=out)
    np.exp(out, out=out)
    np.add.reduce(out, axis=0, out=row)
    np.divide(out, row, out=out)
    return out


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
            outputs = [(o.name, len(o.shape) if o.shape is not None else None)
                       for o in network.get_outputs()]  # fmt: skip
            index = pick_output(outputs, info.output_name, Path(info.path).name)
            self.output_name = outputs[index][0]
            first = network.get_inputs()[0].shape
            # a batch axis fixed in the file (often 1): larger batches go in slices of it
            self.fixed_batch = first[0] if first and isinstance(first[0], int) else None
        else:
            import torch

            if threads:
                torch.set_num_threads(threads)
            self.device = resolve_device(device)
            self.precision = resolve_precision(precision, self.device)
            # channels_last on every device: oneDNN's CPU convolutions run 1.7x faster in it
            # at fp32 too (see pipeline.infer.optimize)
            # (a model whose card says NHWC takes its layout as it is)
            self.channels_last = info.input_layout == "NCHW"
            if isinstance(network, torch.nn.Module):
                # the network may be the process's cached one, already run by another
                # predictor's thread: convert it only while no model call is in flight
                with MODEL_CALLS:
                    network = self.network = fold_batch_norm(network)
                    network.to(self.device)
                    if self.channels_last:
                        network.to(memory_format=torch.channels_last)
        mean, std = info.mean, info.std
        self.mean = None if mean is None else np.asarray(mean, np.float32)[None, :, None, None]
        self.std = None if std is None else np.asarray(std, np.float32)[None, :, None, None]
        self.low = self.span = None
        if info.percentile_values is not None:
            values = np.asarray(info.percentile_values, np.float32)
            self.low = values[:, 0][None, :, None, None]
            self.span = np.maximum(values[:, 1] - values[:, 0], 1e-12)[None, :, None, None]
        # a model card asks for a layout, dtype or activation other than gigaseg's own
        # (NCHW float32 logits): such models take the numpy path through :meth:`logits`
        self.adapted = (info.input_layout, info.output_layout, info.input_dtype, info.applied) != (
            "NCHW",
            "NCHW",
            "float32",
            "none",
        )

    def normalise(self, raw: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        """Raw pixels -> model input: bit depth, percentiles, then ``(x - mean) / std``.

        Every step is per pixel with constants fixed for the whole run, so a tile and the
        whole image are normalised alike.
        """
        batch = raw.astype(np.float32)
        if self.info.bit_depth is not None:
            batch /= np.float32(2**self.info.bit_depth - 1)
        if self.low is not None and self.span is not None:
            batch -= self.low
            batch /= self.span
        if self.mean is not None:
            batch -= self.mean
        if self.std is not None:
            batch /= self.std
        return batch

    def logits(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Run the network on a normalised ``(N, C, H, W)`` batch; float32 ``(N, K, H, W)``.

        The card's layouts and input dtype are applied on the way in and out; a runtime
        failure becomes a one-line :class:`~pipeline.errors.ModelRunError`.
        """
        try:
            out = self._from_output(self._run(self._to_input(batch)))
        except ModelRunError:
            raise
        except Exception as exc:
            raise self._runtime_error(exc, batch) from None
        if self.info.outputs is not None and out.shape[1] != self.info.outputs:
            raise ModelRunError(
                f"model {Path(self.info.path).name} output {out.shape[1]} channel(s) "
                f"(read as {self.info.output_layout}) but {self.info.outputs} class(es) are "
                f"declared ({', '.join(self.info.classes)}); fix output.layout or the classes "
                "in its model card"
            )
        return out

    def _run(self, batch: npt.NDArray[Any]) -> npt.NDArray[Any]:
        if self.onnx:
            step = self.fixed_batch or len(batch)
            parts = []
            with _Timed():
                for start in range(0, len(batch), step):
                    part = batch[start : start + step]
                    short = step - len(part)
                    if short:  # the last slice is filled up with copies of its last item
                        part = np.concatenate([part, np.repeat(part[-1:], short, axis=0)])
                    out = self.network.run([self.output_name], {self.input_name: part})[0]
                    parts.append(np.asarray(out)[: step - short])
            return parts[0] if len(parts) == 1 else np.concatenate(parts)
        import torch

        with _Timed(), torch.inference_mode():
            tensor = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
            out = self._forward((tensor, None))
            result = out.to("cpu", non_blocking=False).numpy()
        return np.asarray(result, dtype=np.float32)

    def _to_input(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
        if self.info.input_layout == "NHWC":
            batch = np.ascontiguousarray(batch.transpose(0, 2, 3, 1))
        if self.info.input_dtype == "uint8":  # rounded and saturated, never wrapped around
            batch = np.clip(np.rint(batch), 0, 255).astype(np.uint8)
        elif self.info.input_dtype != "float32":
            batch = batch.astype(self.info.input_dtype)
        return batch

    def _from_output(self, out: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        if out.ndim not in (3, 4):
            raise self._not_an_image(list(out.shape))
        if out.ndim == 3:  # (N, H, W): one channel without its axis
            out = out[:, None] if self.info.output_layout == "NCHW" else out[..., None]
        if self.info.output_layout == "NHWC":
            out = out.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(out, dtype=np.float32)

    def _not_an_image(self, shape: list[int]) -> ModelRunError:
        return ModelRunError(
            f"model {Path(self.info.path).name} gave an output of shape {shape}, not an "
            f"image ({self.info.output_layout} or N, H, W); pick its image output with "
            "output.name in its model card"
        )

    def _runtime_error(self, exc: Exception, batch: Any) -> ModelRunError:
        """One line naming the model, what it was given and what it expects."""
        given = [int(d) for d in batch.shape]
        if self.info.input_layout == "NHWC":
            given = [given[0], given[2], given[3], given[1]]
        if self.onnx:
            spec = self.network.get_inputs()[0]
            wanted = [d if isinstance(d, int) else "N" if i == 0 else str(d)
                      for i, d in enumerate(spec.shape)]  # fmt: skip
            expected = f"expects {spec.name} {wanted} {spec.type}"
            runtime = "onnxruntime"
        else:
            expected = f"input layout {self.info.input_layout} per its card"
            runtime = "TorchScript"
        text = str(exc)
        if "Traceback" in text:  # TorchScript: a header, its traceback, then the error itself
            head = text.split("Traceback", maxsplit=1)[0].strip()
            last = [line.strip() for line in text.splitlines() if line.strip()][-1]
            text = f"{head} {last}" if last != head else head
        reason = " ".join(text.split())[:240].strip()
        return ModelRunError(
            f"model {Path(self.info.path).name} ({runtime}) failed on input "
            f"{given} {self.info.input_dtype}: {expected}; {reason} -- fix the model card "
            "(input.layout, input.size, input.channels) or --bands/--patch"
        )

    # -- the staged path used by pipeline.infer.feed: stage (reader thread) -> upload (model
    # -- thread, side stream on CUDA) -> forward + activation + encoding on the device.

    def stage(self, batch: npt.NDArray[np.float32]) -> Any:
        """Prepare a normalised batch on the host: pinned memory when the device is CUDA."""
        if self.onnx or self.adapted:
            return batch
        import torch

        tensor = torch.from_numpy(batch)
        return tensor.pin_memory() if self.device.startswith("cuda") else tensor

    def upload(self, staged: Any) -> Any:
        """Start the copy of a staged batch to the device (non-blocking, its own stream).

        Returns what :meth:`encode_staged` takes: the device tensor and, on CUDA, the event
        that marks the end of its copy, so the forward pass of the previous batch and this
        copy overlap.
        """
        if self.onnx or self.adapted or not self.device.startswith("cuda"):
            return (staged, None)
        import torch

        stream = getattr(self, "_copy_stream", None)
        if stream is None:
            stream = self._copy_stream = torch.cuda.Stream(device=self.device)  # type: ignore[no-untyped-call]
        with torch.cuda.stream(stream):
            tensor = staged.to(self.device, non_blocking=True)
            event = torch.cuda.Event()  # type: ignore[no-untyped-call]
            event.record(stream)
        return (tensor, event)

    def _forward(self, uploaded: Any) -> Any:
        """Forward pass of an uploaded batch; float32 logits as a device tensor."""
        import torch

        tensor, event = uploaded
        cuda = self.device.startswith("cuda")
        if event is not None:
            torch.cuda.current_stream(self.device).wait_event(event)
            tensor.record_stream(torch.cuda.current_stream(self.device))
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        if self.channels_last:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda" if cuda else "cpu", dtype=dtype, enabled=dtype is not None):
            out = self.network(tensor)
        return self._select(out).float().contiguous()

    def _select(self, out: Any) -> Any:
        """Pick the card's output (or the first image) from a tuple/list/dict of tensors."""
        if isinstance(out, dict):
            items = [(str(k), v) for k, v in out.items()]
        elif isinstance(out, (tuple, list)):
            items = [(str(i), v) for i, v in enumerate(out)]
        else:
            return out
        ranks = [(k, v.dim() if hasattr(v, "dim") else None) for k, v in items]
        wanted = self.info.output_name
        if isinstance(wanted, int) and isinstance(out, dict):
            wanted = ranks[wanted][0] if wanted < len(ranks) else wanted
        elif isinstance(wanted, str) and wanted.isdigit() and not isinstance(out, dict):
            wanted = int(wanted)
        return items[pick_output(ranks, wanted, Path(self.info.path).name)][1]

    @property
    def host_encoding(self) -> bool:
        """Whether activation and encoding run in numpy (:func:`encode_host`), not the device.

        ONNX and card-adapted models give numpy outputs: their encoding is host work, which
        :class:`~pipeline.infer.feed.Feed` leaves to the reader threads, off the model's.
        """
        return self.onnx or self.adapted or self.info.activation not in ("sigmoid", "softmax")

    def run_staged(self, uploaded: Any, probabilities: str, threshold: float) -> Any:
        """Run the model's part of :meth:`encode_staged` (what the model thread does).

        With :attr:`host_encoding`, the float32 ``(N, K, H, W)`` model output as numpy, to be
        encoded by :meth:`finish` in any thread; otherwise forward, activation, labels and
        the stored encoding on the device, only the stored dtype and uint8 labels coming back.
        """
        activation = self.info.activation
        if self.host_encoding:
            batch, _ = uploaded
            if self.onnx or self.adapted:
                return self.logits(batch)
            import torch

            with _Timed(), torch.inference_mode():
                return self._forward(uploaded).cpu().numpy()
        import torch

        with _Timed(), torch.inference_mode():
            try:
                out = self._forward(uploaded)
            except ModelRunError:
                raise
            except Exception as exc:
                raise self._runtime_error(exc, uploaded[0]) from None
            if out.dim() == 3:  # (N, H, W): one channel without its axis
                out = out[:, None]
            elif out.dim() != 4:
                raise self._not_an_image(list(out.shape))
            chances = torch.sigmoid(out) if activation == "sigmoid" else torch.softmax(out, dim=1)
            bad = int(chances.numel() - torch.isfinite(chances).sum().item())
            if bad:
                raise NonFiniteOutputError(bad)
            if activation == "sigmoid" and chances.shape[1] == 1:
                classes = (chances[:, 0] >= threshold).to(torch.uint8)
            else:
                classes = torch.argmax(chances, dim=1).to(torch.uint8)
            if probabilities == "uint8":
                encoded = torch.round(chances.clamp(0.0, 1.0) * 255.0).to(torch.uint8)
            else:
                dtype = {"float16": torch.float16, "float32": torch.float32}[probabilities]
                encoded = chances.to(dtype)
            cuda = self.device.startswith("cuda")
            stored_host = encoded.to("cpu", non_blocking=cuda)
            labels_host = classes.to("cpu", non_blocking=cuda)
            if cuda:
                torch.cuda.current_stream(self.device).synchronize()
        return stored_host.numpy(), labels_host.numpy()

    def finish(
        self, out: Any, probabilities: str, threshold: float
    ) -> tuple[npt.NDArray[Any], npt.NDArray[np.uint8]]:
        """Turn what :meth:`run_staged` gave into ``(stored, labels)`` in this thread.

        Host encoding (:func:`encode_host`) is timed into this thread's
        :func:`encode_seconds`; a device's result is returned as it is.
        """
        if not self.host_encoding:
            stored, labels = out
            return stored, labels
        start = time.perf_counter()
        try:
            # a card's already-activated output is used as it is, never activated twice
            return encode_host(
                out,
                self.info.activation,
                probabilities,
                threshold,
                activated=self.info.applied != "none",
            )
        finally:
            _ENCODE_TIME.seconds = encode_seconds() + time.perf_counter() - start

    def encode_staged(
        self, uploaded: Any, probabilities: str, threshold: float
    ) -> tuple[npt.NDArray[Any], npt.NDArray[np.uint8]]:
        """Forward, activation, labels and stored encoding of an uploaded batch.

        On a torch device all of it runs there and only the stored dtype (uint8 by default)
        and the uint8 labels come back. The encoding is the store's: ``round(p * 255)`` for
        uint8 (``p`` clipped to [0, 1]); labels are ``p >= threshold`` for one sigmoid channel,
        else the argmax. (:meth:`run_staged` then :meth:`finish`.)
        """
        return self.finish(
            self.run_staged(uploaded, probabilities, threshold), probabilities, threshold
        )

    def encode(
        self, raw: npt.NDArray[Any], probabilities: str = "uint8", threshold: float = 0.5
    ) -> tuple[npt.NDArray[Any], npt.NDArray[np.uint8]]:
        """Raw ``(N, C, H, W)`` windows -> stored probabilities and labels (one thread)."""
        return self.encode_staged(
            self.upload(self.stage(self.normalise(raw))), probabilities, threshold
        )

    def __call__(self, raw: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        """Raw ``(N, C, H, W)`` windows -> ``(N, K, H', W')`` probabilities.

        The activation is applied only to logits (``applied == "none"``): a model whose card
        says its output is already sigmoid/softmax/probabilities is never activated twice.
        """
        out = self.logits(self.normalise(raw))
        if self.info.applied != "none":
            return out
        return activate(out, self.info.activation)
