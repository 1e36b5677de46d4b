"""Model files, their metadata, and the once-per-process model cache.

``pipeline.infer`` never imports ``unet``: a gigaseg checkpoint is opened by a loader the
caller names as an import string (``"module:function"``, e.g. the one in
:mod:`pipeline.predict`). TorchScript and ONNX files are opened here. A loader returns the
callable network and a metadata dict; :func:`describe_model` turns it, together with the
user's overrides, into a picklable :class:`ModelInfo` on the client, and the workers load the
network once per process with :func:`cached_model` (tasks carry only the path).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import CheckpointError, ConfigError, ModelRunError
from pipeline.infer.card import (
    CARD_KEY,
    ModelCard,
    card_beside,
    guess_layout,
    parse_card,
    read_card,
)
from pipeline.tile.grid import InputSizes

__all__ = [
    "FOREIGN_ALIGNMENT",
    "LOADERS",
    "LOAD_COUNTS",
    "ModelInfo",
    "ModelRef",
    "cached_model",
    "describe_model",
    "file_sha256",
    "info_from_card",
    "load_onnx",
    "load_torchscript",
    "model_kind",
    "pick_output",
    "register_loader",
    "with_overrides",
]

#: Alignment assumed for a TorchScript/ONNX model whose file does not record one (2**5 covers
#: U-Nets up to depth 5).
FOREIGN_ALIGNMENT = 32

#: Model kind -> ``"module:function"`` returning ``(network, metadata)`` for a path.
LOADERS: dict[str, str] = {
    "torchscript": "pipeline.infer.model:load_torchscript",
    "onnx": "pipeline.infer.model:load_onnx",
}

#: Path -> number of times this process loaded it (tests check "once per worker").
LOAD_COUNTS: dict[str, int] = {}

#: Metadata kept in :attr:`ModelInfo.extra`: the pixel size the model was trained at (µm for
#: slide models, CRS units for GeoTIFF models) and a stain-normalisation target.
_EXTRA_KEYS = ("pixel_size", "stain")

_CACHE: dict[tuple[str, str, str], Any] = {}
_CACHE_LOCK = threading.Lock()


def register_loader(kind: str, target: str) -> None:
    """Register ``target`` (``"module:function"``) as the loader of model files of ``kind``."""
    LOADERS[kind] = target


def model_kind(path: str) -> str:
    """Guess the model kind from the file suffix."""
    suffix = Path(path).suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix in (".pt", ".pth", ".ts", ".jit", ".torchscript"):
        return "torchscript"
    if suffix == ".safetensors":
        return "gigaseg"
    raise CheckpointError(
        f"{path}: unknown model format {suffix!r}; use a gigaseg .safetensors checkpoint, a "
        "TorchScript .pt/.ts file or an ONNX .onnx file"
    )


def file_sha256(path: str) -> str:
    """Return the hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _resolve(target: str) -> Callable[[str], tuple[Any, dict[str, Any]]]:
    module, _, name = target.partition(":")
    loader: Callable[[str], tuple[Any, dict[str, Any]]] = getattr(
        importlib.import_module(module), name
    )
    return loader


def load_torchscript(path: str) -> tuple[Any, dict[str, Any]]:
    """Load a TorchScript file; metadata from its ``gigaseg.json`` extra file when present."""
    import torch

    extra = {"gigaseg.json": "", f"{CARD_KEY}.json": ""}
    try:
        module = torch.jit.load(  # type: ignore[no-untyped-call]
            path, map_location="cpu", _extra_files=extra
        )
    except Exception as exc:
        reason = " ".join(str(exc).split())[:200]
        raise CheckpointError(f"{path} is not a loadable TorchScript model ({reason})") from None
    module.eval()
    text = extra["gigaseg.json"]
    meta = json.loads(text) if text else {}
    if extra[f"{CARD_KEY}.json"]:
        meta["card"] = _embedded(extra[f"{CARD_KEY}.json"], path)
    return module, meta


def load_onnx(path: str) -> tuple[Any, dict[str, Any]]:
    """Load an ONNX file into an onnxruntime session; metadata from the ``gigaseg`` property."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    # no busy-waiting between calls: its threads would take the cores the reader threads
    # decode, encode and compress on (a 1x1 convolution: 65 -> 34 ms of CPU per 4 Mpx call)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    try:
        session = onnxruntime.InferenceSession(
            path, sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:
        reason = " ".join(str(exc).split())[:200]
        raise CheckpointError(f"{path} is not a loadable ONNX model ({reason})") from None
    props = session.get_modelmeta().custom_metadata_map
    meta = json.loads(props["gigaseg"]) if "gigaseg" in props else {}
    if CARD_KEY in props:
        meta["card"] = _embedded(props[CARD_KEY], path)
    shape = list(session.get_inputs()[0].shape)
    # an NHWC input ([N, 1024, 1024, 1]) has no channel count at axis 1: only a card says so
    nchw = guess_layout(shape) != "NHWC"
    if "in_channels" not in meta and len(shape) == 4 and isinstance(shape[1], int) and nchw:
        meta["in_channels"] = shape[1]
    return session, meta


def pick_output(outputs: list[tuple[str, int | None]], wanted: str | int | None, model: str) -> int:
    """Return the index of the model output to use among ``(name, rank)`` pairs.

    Parameters
    ----------
    outputs
        Each output's name (ONNX name, dict key, or position as text) and rank (``None``
        when unknown).
    wanted
        The card's ``output.name``: a name or a 0-based position; ``None`` takes the first
        output of rank 4, else of rank 3, else the first.
    model
        The model's name, for the message.

    Raises
    ------
    ModelRunError
        One line naming the model, the output asked for and the outputs it has.

    Examples
    --------
    >>> pick_output([("aux", 2), ("seg", 4)], None, "m"), pick_output([("aux", 2)], "aux", "m")
    (1, 0)
    """
    names = [name for name, _ in outputs]
    listed = ", ".join(f"{i}: {name} (rank {rank if rank is not None else '?'})"
                       for i, (name, rank) in enumerate(outputs))  # fmt: skip
    if isinstance(wanted, int):
        if wanted < len(outputs):
            return wanted
        raise ModelRunError(
            f"model {model} has {len(outputs)} output(s), no position {wanted} "
            f"(output.name in its card); its outputs: {listed}"
        )
    if wanted is not None:
        if wanted in names:
            return names.index(wanted)
        raise ModelRunError(
            f"model {model} has no output {wanted!r} (output.name in its card); "
            f"its outputs: {listed}"
        )
    for rank in (4, 3):
        for i, (_, r) in enumerate(outputs):
            if r == rank:
                return i
    return 0


def _embedded(text: str, path: str) -> dict[str, Any]:
    """Parse a card embedded in a model file (JSON, or YAML written by hand)."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        data = None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: embedded {CARD_KEY} is not a JSON/YAML mapping")
    return data


@dataclass(frozen=True)
class ModelInfo:
    """What the pipeline needs to know about a model, resolved on the client.

    Attributes
    ----------
    halo, alignment, padding, sizes
        Geometry: context per side, size/offset granularity, ``"same"``/``"valid"``, and the
        input sizes accepted.
    classes
        Class names; ``outputs`` is the number of probability channels.
    activation
        How labels are derived: ``"sigmoid"`` (one channel, threshold) or ``"softmax"``
        (argmax).
    applied
        What the network's output already is (``none`` = logits, then ``activation`` is
        applied; ``sigmoid``/``softmax``/``probabilities`` are used as they are).
    input_layout, output_layout
        ``"NCHW"`` or ``"NHWC"`` of the network's input and output.
    fixed_size
        The one input height = width the network accepts, or ``None``.
    input_dtype, bit_depth, percentiles, percentile_values
        Input dtype and normalisation besides ``mean``/``std`` (see :mod:`.card`).
    measure_halo
        The card asks for the halo to be measured by perturbation.
    colors, pixel_size, pixel_unit, card
        From the model card: class colours, training pixel size and its unit, the card.
    output_name
        Which output of several the card picks (a name or a 0-based position); ``None``
        takes the first image-shaped one.
    """

    path: str
    kind: str
    loader: str
    name: str
    sha256: str
    halo: int | None
    alignment: int
    padding: str
    sizes: InputSizes
    in_channels: int | None
    classes: tuple[str, ...]
    outputs: int | None
    activation: str
    bands: tuple[int, ...] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    receptive_field: int | None = None
    applied: str = "none"
    input_layout: str = "NCHW"
    output_layout: str = "NCHW"
    fixed_size: int | None = None
    input_dtype: str = "float32"
    bit_depth: int | None = None
    percentiles: tuple[float, float] | None = None
    percentile_values: tuple[tuple[float, float], ...] | None = None
    measure_halo: bool = False
    colors: tuple[tuple[int, int, int] | None, ...] | None = None
    pixel_size: float | None = None
    pixel_unit: str | None = None
    output_name: str | int | None = None
    card: dict[str, Any] | None = field(default=None, compare=False, hash=False)
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def fill_values(self) -> tuple[float, ...] | None:
        """The raw pixel value per band that the normalisation maps to 0.

        It is the band mean in raw units, what invalid (nodata) pixels are filled with before
        the model. A card's ``mean`` is in the units after ``bit_depth`` and ``percentiles``
        (``bit_depth: 8, mean: [0.5]`` -> 127.5); ``None`` when nothing shifts the input
        (a filled pixel is then 0).

        Examples
        --------
        >>> info = ModelInfo("m", "onnx", "", "m", "", 0, 1, "same", InputSizes(1, 1), 1,
        ...                  ("a",), 1, "sigmoid", mean=(0.5,), std=(0.25,), bit_depth=8)
        >>> info.fill_values
        (127.5,)
        """
        if self.mean is None and self.percentile_values is None:
            return None
        mean = np.zeros(1) if self.mean is None else np.asarray(self.mean, np.float64)
        low, span = np.zeros(1), np.ones(1)
        if self.percentile_values is not None:
            values = np.asarray(self.percentile_values, np.float64)
            low, span = values[:, 0], np.maximum(values[:, 1] - values[:, 0], 1e-12)
        scale = 1.0 if self.bit_depth is None else float(2**self.bit_depth - 1)
        raw = np.broadcast_to(scale * (low + mean * span), np.broadcast(low, mean).shape)
        return tuple(float(v) for v in raw)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary for the store attributes."""
        out: dict[str, Any] = {
            "name": self.name,
            "sha256": self.sha256,
            "kind": self.kind,
            "halo": self.halo,
            "alignment": self.alignment,
            "padding": self.padding,
            "receptive_field": self.receptive_field,
            "input_layout": self.input_layout,
            "output_layout": self.output_layout,
            "applied": self.applied,
            "fixed_size": self.fixed_size,
            "pixel_size": self.pixel_size,
            "pixel_unit": self.pixel_unit,
        }
        if self.percentile_values is not None:
            out["percentile_values"] = [list(v) for v in self.percentile_values]
        if self.card is not None:
            out["card"] = self.card
        return out


@dataclass(frozen=True)
class ModelRef:
    """What a task carries: the model path, its loader and the resolved :class:`ModelInfo`."""

    info: ModelInfo
    device: str = "auto"
    precision: str = "auto"
    threads: int | None = None


def describe_model(
    path: str,
    *,
    kind: str | None = None,
    loader: str | None = None,
    complete: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    card: str | Path | ModelCard | dict[str, Any] | None = None,
) -> tuple[ModelInfo, Any]:
    """Load ``path`` on the client and return its :class:`ModelInfo` and the network.

    Parameters
    ----------
    path
        Model file.
    kind
        ``"gigaseg"``, ``"torchscript"`` or ``"onnx"`` (from the suffix by default).
    loader
        ``"module:function"`` overriding :data:`LOADERS` for this kind.
    complete
        Optional hook adding geometry (halo, alignment...) to metadata that only carries an
        architecture (a TorchScript/ONNX export of a gigaseg checkpoint).
    card
        A model card (file, mapping or :class:`ModelCard`); by default the card beside the
        file (``m.card.yaml``), else the one embedded in it. The card wins over metadata.
    """
    path = str(path)
    if not Path(path).is_file():
        raise CheckpointError(f"model {path} does not exist; check --model")
    kind = kind or model_kind(path)
    target = loader or LOADERS.get(kind)
    if target is None:
        raise CheckpointError(f"no loader registered for {kind} models ({path})")
    network, meta = _resolve(target)(path)
    if complete is not None:
        meta = complete(meta)
    alignment = int(meta.get("alignment") or FOREIGN_ALIGNMENT)
    padding = str(meta.get("padding", "same"))
    first = int(meta.get("sizes_first") or alignment)
    classes = tuple(meta.get("classes") or ())
    outputs = meta.get("outputs") or (len(classes) if classes else None)
    activation = meta.get("activation") or ("sigmoid" if outputs == 1 else "softmax")
    arch = meta.get("architecture") or {}
    info = ModelInfo(
        path=path,
        kind=kind,
        loader=target,
        name=str(meta.get("name") or Path(path).stem),
        sha256=str(meta.get("sha256") or file_sha256(path)),
        halo=None if meta.get("halo") is None else int(meta["halo"]),
        alignment=alignment,
        padding=padding,
        sizes=InputSizes(first, alignment),
        in_channels=meta.get("in_channels") or arch.get("in_channels"),
        classes=classes,
        outputs=None if outputs is None else int(outputs),
        activation=str(activation),
        bands=None if meta.get("bands") is None else tuple(meta["bands"]),
        mean=tuple(float(v) for v in meta["mean"]) if meta.get("mean") else None,
        std=tuple(float(v) for v in meta["std"]) if meta.get("std") else None,
        receptive_field=meta.get("receptive_field"),
        extra={k: meta[k] for k in _EXTRA_KEYS if meta.get(k) is not None},
        pixel_size=None if meta.get("pixel_size") is None else float(meta["pixel_size"]),
    )
    found = _find_card(path, card, meta)
    if found is not None:
        info = info_from_card(info, found)
    return info, network


def _find_card(
    path: str, card: str | Path | ModelCard | dict[str, Any] | None, meta: dict[str, Any]
) -> ModelCard | None:
    if isinstance(card, ModelCard | dict):
        return parse_card(card, source=f"model card of {path}")
    if card is not None:
        return read_card(card)
    beside = card_beside(path)
    if beside is not None:
        return read_card(beside)
    if meta.get("card"):
        return parse_card(meta["card"], source=f"{path} (embedded {CARD_KEY})")
    return None


def info_from_card(info: ModelInfo, card: ModelCard) -> ModelInfo:
    """Return ``info`` with everything the card states (the card wins over file metadata)."""
    given, out = card.input, card.output
    norm = given.normalisation
    alignment = given.multiple
    if given.size is not None:
        first = given.size
    else:  # keep a valid-convolution model's own first size when the alignment agrees
        first = info.sizes.first if info.alignment == alignment else alignment
    outputs = len(card.classes)
    halo = None if card.halo == "measure" else int(card.halo)
    return replace(
        info,
        name=card.name or info.name,
        halo=halo if halo is not None or info.halo is None else info.halo,
        measure_halo=card.halo == "measure",
        alignment=alignment,
        padding=out.padding,
        sizes=InputSizes(first, alignment),
        in_channels=given.channels,
        classes=card.class_names,
        outputs=outputs,
        activation="sigmoid" if outputs == 1 else "softmax",
        applied=out.activation,
        bands=tuple(given.bands) if given.bands is not None else info.bands,
        mean=tuple(norm.mean) if norm.mean is not None else None,
        std=tuple(norm.std) if norm.std is not None else None,
        input_layout=given.layout,
        output_layout=out.layout,
        output_name=out.name,
        fixed_size=given.size,
        input_dtype=given.dtype,
        bit_depth=norm.bit_depth,
        percentiles=norm.percentiles,
        percentile_values=None if norm.values is None else tuple(map(tuple, norm.values)),  # type: ignore[arg-type]
        colors=tuple(c.color for c in card.classes),
        pixel_size=card.pixel_size,
        pixel_unit=card.pixel_unit,
        card=card.to_dict(),
        # the resolution matching and stain normalisation read these (issue 10 parts 3, 5)
        extra={
            **info.extra,
            **({"stain": card.stain} if card.stain else {}),
            **({"pixel_size": card.pixel_size} if card.pixel_size is not None else {}),
        },
    )


def with_overrides(
    info: ModelInfo, *, halo: int | None = None, classes: tuple[str, ...] | None = None
) -> ModelInfo:
    """Return ``info`` with a user halo and/or class names."""
    changes: dict[str, Any] = {}
    if halo is not None:
        if info.padding == "valid" and info.halo is not None and halo != info.halo:
            raise ConfigError(
                f"halo {halo} cannot be used with a valid-convolution model: its halo is fixed "
                f"at {info.halo}; use --halo auto"
            )
        changes["halo"] = halo
    if classes:
        changes["classes"] = classes
        changes["outputs"] = len(classes)
        changes["activation"] = "sigmoid" if len(classes) == 1 else "softmax"
    return replace(info, **changes) if changes else info


def cached_model(info: ModelInfo) -> Any:
    """Return this process's network for ``info``, loading it on first use only.

    The cache is keyed by the file's content hash (``info.sha256``, computed on the client),
    not only its path: a long-lived worker that served a model keeps it in memory, and a file
    replaced at the same path must be reloaded, not served stale under the new hash. The
    file loaded is checked against that hash, so a file replaced mid-run fails loudly.
    """
    key = (info.path, info.loader, info.sha256)
    with _CACHE_LOCK:
        if key not in _CACHE:
            network, meta = _resolve(info.loader)(info.path)
            loaded = str(meta.get("sha256") or file_sha256(info.path))
            if info.sha256 and loaded != info.sha256:
                raise CheckpointError(
                    f"model {info.path} changed during the run (sha256 {loaded[:12]}... on this "
                    f"worker, {info.sha256[:12]}... when the run started); rerun with --resume "
                    "once the file is final"
                )
            for old in [k for k in _CACHE if k[:2] == key[:2]]:
                del _CACHE[old]  # an earlier version of this file
            LOAD_COUNTS[info.path] = LOAD_COUNTS.get(info.path, 0) + 1
            _CACHE[key] = network
        return _CACHE[key]
