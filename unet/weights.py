"""Checkpoints: safetensors weights with the architecture and preprocessing in the header.

A checkpoint is one ``.safetensors`` file. Its header's ``__metadata__`` holds a single key,
``gigaseg``, whose value is JSON with everything needed to rebuild and feed the model:
architecture, class names, band order, normalisation and pixel size -- the weights record
torchvision keeps beside its weights, carried inside the file instead.

Checkpoints are never unpickled. A pickle-based ``.pt``/``.pth`` file (zip or raw pickle)
is refused before a byte of it is deserialised, because unpickling can run arbitrary code.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from pipeline.errors import CheckpointError
from unet.model import Architecture, UNet

__all__ = [
    "FORMAT",
    "ModelMetadata",
    "file_sha256",
    "load",
    "read_metadata",
    "save",
]

#: Value of the header's ``format`` field; bump ``version`` on incompatible changes.
FORMAT = "gigaseg-unet"
VERSION = 1
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit


@dataclass(frozen=True)
class ModelMetadata:
    """What a checkpoint says about its model, besides the weights.

    Attributes
    ----------
    architecture
        :class:`~unet.model.UNet` constructor arguments.
    classes
        Names of the output channels (``("building",)`` for a one-channel sigmoid model;
        channel 0 is background for a softmax model).
    bands
        1-based source band indices the model was trained on, in order, or ``None``.
    mean, std
        Per-band normalisation, applied as ``(raw - mean) / std``.
    pixel_size
        Training pixel size (metres, or microns for slides), or ``None``.
    activation
        ``"sigmoid"`` for one output channel, else ``"softmax"``.
    sha256
        Hex digest of the checkpoint file (empty for a model not read from a file).
    extra
        Anything else the trainer recorded (config, metrics...).
    """

    architecture: dict[str, Any]
    classes: tuple[str, ...]
    bands: tuple[int, ...] | None = None
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    pixel_size: float | None = None
    activation: str = "sigmoid"
    sha256: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """Serialise to the JSON stored in the header (without ``sha256``)."""
        return json.dumps(
            {
                "format": FORMAT,
                "version": VERSION,
                "architecture": self.architecture,
                "classes": list(self.classes),
                "bands": None if self.bands is None else list(self.bands),
                "mean": list(self.mean),
                "std": list(self.std),
                "pixel_size": self.pixel_size,
                "activation": self.activation,
                "extra": self.extra,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str, *, sha256: str = "", source: str = "checkpoint") -> ModelMetadata:
        """Parse the header JSON, naming what is missing or wrong."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{source}: gigaseg header is not valid JSON ({exc})") from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CheckpointError(f"{source}: header is not a {FORMAT} checkpoint header")
        if data.get("version") != VERSION:
            raise CheckpointError(
                f"{source}: checkpoint format version {data.get('version')!r} is not supported "
                f"(this gigaseg reads version {VERSION}); re-save it with this version"
            )
        try:
            bands = data.get("bands")
            return cls(
                architecture=dict(data["architecture"]),
                classes=tuple(str(c) for c in data["classes"]),
                bands=None if bands is None else tuple(int(b) for b in bands),
                mean=tuple(float(v) for v in data.get("mean", ())),
                std=tuple(float(v) for v in data.get("std", ())),
                pixel_size=None if data.get("pixel_size") is None else float(data["pixel_size"]),
                activation=str(data.get("activation", "sigmoid")),
                sha256=sha256,
                extra=dict(data.get("extra") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{source}: checkpoint header is incomplete ({exc!r})") from exc


def save(
    model: UNet,
    path: str | os.PathLike[str],
    *,
    classes: list[str] | tuple[str, ...],
    bands: list[int] | tuple[int, ...] | None = None,
    mean: list[float] | tuple[float, ...] | None = None,
    std: list[float] | tuple[float, ...] | None = None,
    pixel_size: float | None = None,
    extra: dict[str, Any] | None = None,
) -> ModelMetadata:
    """Write ``model`` and its metadata to a safetensors checkpoint.

    The file is written under a temporary name and renamed, so a checkpoint path never
    holds a half-written file.

    Parameters
    ----------
    model
        The network.
    path
        Destination, conventionally ``*.safetensors``.
    classes
        One name per output channel.
    bands
        1-based source bands, in the order the model expects them.
    mean, std
        Per-band normalisation (defaults: 0 and 1 for every input channel).
    pixel_size
        Training pixel size in metres (microns for slides).
    extra
        JSON-able extras (training config, metrics...).

    Returns
    -------
    ModelMetadata
        What was written, with the file's sha256.
    """
    arch = model.architecture
    channels = arch.in_channels
    if len(classes) != arch.classes:
        raise CheckpointError(
            f"classes has {len(classes)} names but the model has {arch.classes} output channels"
        )
    mean = tuple(mean) if mean is not None else (0.0,) * channels
    std = tuple(std) if std is not None else (1.0,) * channels
    for name, values in (("mean", mean), ("std", std), ("bands", bands)):
        if values is not None and len(values) != channels:
            raise CheckpointError(
                f"{name} has {len(values)} values but the model takes {channels} input bands"
            )
    if any(s <= 0 for s in std):
        raise CheckpointError(f"std values must be positive, got {list(std)}")
    metadata = ModelMetadata(
        architecture=arch.to_dict(),
        classes=tuple(classes),
        bands=None if bands is None else tuple(int(b) for b in bands),
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
        pixel_size=pixel_size,
        activation="sigmoid" if arch.classes == 1 else "softmax",
        extra=dict(extra or {}),
    )
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata={"gigaseg": metadata.to_json()})
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return ModelMetadata(**{**metadata.__dict__, "sha256": file_sha256(path)})


def read_metadata(path: str | os.PathLike[str]) -> ModelMetadata:
    """Read a checkpoint's metadata from its header without loading the weights."""
    path = Path(path)
    header = _read_header(path)
    text = (header.get("__metadata__") or {}).get("gigaseg")
    if text is None:
        raise CheckpointError(
            f"{path}: safetensors file has no gigaseg header; save it with unet.save, or run "
            "it as a TorchScript/ONNX model with an explicit --halo"
        )
    return ModelMetadata.from_json(text, sha256=file_sha256(path), source=str(path))


def load(
    path: str | os.PathLike[str], *, device: str | torch.device = "cpu"
) -> tuple[UNet, ModelMetadata]:
    """Rebuild a :class:`UNet` from a checkpoint, in ``eval()`` mode.

    Parameters
    ----------
    path
        A ``.safetensors`` checkpoint written by :func:`save`.
    device
        Where to put the weights.

    Returns
    -------
    model, metadata

    Raises
    ------
    CheckpointError
        If the file is missing, a pickle, or its header and weights disagree.
    """
    path = Path(path)
    header = _read_header(path)
    metadata = read_metadata(path)
    try:
        arguments = Architecture.from_dict(metadata.architecture).to_dict()
        with torch.device("meta"):  # shapes only: nothing is allocated yet
            expected = {k: tuple(v.shape) for k, v in UNet(**arguments).state_dict().items()}
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: bad architecture in header ({exc})") from exc
    stored = {k: tuple(v.get("shape", ())) for k, v in header.items() if k != "__metadata__"}
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    reshaped = sorted(k for k in set(expected) & set(stored) if expected[k] != stored[k])
    if missing or unexpected or reshaped:
        needed = sum(math.prod(shape) for shape in expected.values()) * 4
        raise CheckpointError(
            f"{path}: weights do not match the header's architecture, which needs "
            f"{_size(needed)} of weights (the file holds {_size(path.stat().st_size)}; missing "
            f"{missing[:3]}, unexpected {unexpected[:3]}, shape differs {reshaped[:3]}); "
            "the header was edited or the file is not this model's: save it again"
        )
    model = UNet(**arguments)
    state = load_file(str(path), device=str(device))
    model.load_state_dict(state)
    model.to(device).eval()
    return model, metadata


def _size(count: float) -> str:
    """Bytes as text: ``"12 bytes"``, ``"3.4 MB"``, ``"8153.3 GB"``."""
    if count < 1000:
        return f"{count:.0f} bytes"
    for unit in ("KB", "MB"):
        count /= 1000
        if count < 1000:
            return f"{count:.1f} {unit}"
    return f"{count / 1000:.1f} GB"


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_header(path: Path) -> dict[str, Any]:
    """Parse the safetensors JSON header, refusing pickles and other formats by structure.

    A safetensors file starts with the little-endian length of its JSON header, so its first
    byte can be anything -- 0x80 included, which is also how a pickle starts. So the file is
    first read as safetensors (a length that fits the file, then a JSON object); only when
    that fails is it told apart as a PyTorch zip or raw pickle, by their own structure.
    """
    if not path.is_file():
        raise CheckpointError(f"model file {path} does not exist; check the path")
    file_size = path.stat().st_size
    with path.open("rb") as stream:
        head = stream.read(8)
        size = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
        raw = stream.read(size) if 2 <= size <= min(_MAX_HEADER, file_size - 8) else b""
    header = _parse_json_object(raw)
    if header is not None:
        _check_offsets(path, header, file_size - 8 - size)
        return header
    if _is_pickle(path, head):
        raise CheckpointError(
            f"{path} is a pickle-based PyTorch checkpoint; gigaseg never unpickles model "
            "files (unpickling can run code): save the weights as safetensors with unet.save"
        )
    if len(head) < 8:
        raise CheckpointError(f"{path} is too short to be a safetensors checkpoint")
    raise CheckpointError(
        f"{path} is not a safetensors checkpoint (its first 8 bytes do not give the length of "
        "a JSON header that fits the file); save the model with unet.save"
    )


def _parse_json_object(raw: bytes) -> dict[str, Any] | None:
    if not raw.lstrip(b" ").startswith(b"{"):
        return None
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return header if isinstance(header, dict) else None


def _is_pickle(path: Path, head: bytes) -> bool:
    """Whether ``path`` is a PyTorch zip checkpoint or a raw pickle (protocol 2-5)."""
    import pickletools
    import zipfile

    if head[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as archive:
                return any(name.endswith(".pkl") for name in archive.namelist())
        except (zipfile.BadZipFile, OSError):
            return False
    if len(head) < 2 or head[0] != 0x80 or not 2 <= head[1] <= 5:
        return False
    # A PROTO opcode alone could be chance: require that the opcodes parse (without executing
    # anything: pickletools only decodes) for the first 64 KiB.
    with path.open("rb") as stream:
        sample = stream.read(1 << 16)
    try:
        for _ in pickletools.genops(sample):
            pass
    except ValueError as exc:
        return len(sample) == 1 << 16 and ("exhausted" in str(exc) or "remain" in str(exc))
    return True


def _check_offsets(path: Path, header: dict[str, Any], data_size: int) -> None:
    """Every tensor entry must lie inside the file's data section."""
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(v, int) for v in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= data_size
        ):
            raise CheckpointError(
                f"{path}: tensor {name!r} lies outside the file ({data_size} bytes of data); "
                "the file is truncated or corrupt: save or copy it again"
            )
