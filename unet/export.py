"""Export a checkpoint to TorchScript or ONNX, carrying its metadata along.

The exported file embeds the same JSON header as the safetensors checkpoint (TorchScript:
extra file ``gigaseg.json``; ONNX: metadata property ``gigaseg``), so the inference engine
knows the halo, classes and normalisation of an exported model as well as of the original.
It also carries a model card (:mod:`pipeline.infer.card`; TorchScript extra file
``gigaseg.card.json``, ONNX property ``gigaseg.card``), the form any tool can read.
Both formats keep height and width dynamic: a U-Net is fully convolutional.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Literal

import torch

from pipeline.errors import CheckpointError
from pipeline.infer.card import CARD_KEY, ModelCard, parse_card
from unet.model import UNet
from unet.weights import ModelMetadata

__all__ = ["METADATA_KEY", "TORCHSCRIPT_EXTRA_FILE", "export", "model_card"]

METADATA_KEY = "gigaseg"
TORCHSCRIPT_EXTRA_FILE = "gigaseg.json"
ONNX_OPSET = 17


def export(
    model: UNet,
    metadata: ModelMetadata,
    out: str | os.PathLike[str],
    *,
    format: Literal["torchscript", "onnx"],
) -> Path:
    """Write ``model`` as TorchScript or ONNX with its metadata embedded.

    The file appears under ``out`` only once complete (written to a temporary name first).

    Parameters
    ----------
    model
        The network, in any mode (exported in ``eval()`` mode, on the CPU, in float32).
    metadata
        Its checkpoint metadata.
    out
        Destination file.
    format
        ``"torchscript"`` or ``"onnx"``.

    Returns
    -------
    Path
        ``out``.
    """
    out = Path(out)
    model = model.cpu().float().eval()
    size = model.valid_input_size(2 * model.alignment)
    example = torch.zeros(1, model.architecture.in_channels, size, size)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with warnings.catch_warnings():
            # The tracer warns about Python-side shape arithmetic; the graph is still exact
            # for every size the model accepts (checked by the export tests).
            warnings.simplefilter("ignore")
            if format == "torchscript":
                _to_torchscript(model, metadata, example, tmp)
            elif format == "onnx":
                _to_onnx(model, metadata, example, tmp)
            else:
                raise CheckpointError(
                    f"unknown export format {format!r}; choose 'torchscript' or 'onnx'"
                )
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def model_card(model: UNet, metadata: ModelMetadata, name: str | None = None) -> ModelCard:
    """Return the model card of a gigaseg U-Net: NCHW logits, its halo, alignment and metadata."""
    arch = model.architecture
    norm = {"mean": list(metadata.mean), "std": list(metadata.std)} if metadata.mean else {}
    return parse_card(
        {
            "name": name,
            "input": {
                "layout": "NCHW",
                "channels": arch.in_channels,
                "bands": None if metadata.bands is None else list(metadata.bands),
                "normalisation": norm,
                "multiple": int(model.alignment),
            },
            "halo": int(model.halo),
            "output": {"layout": "NCHW", "activation": "none", "padding": str(model.padding)},
            "classes": list(metadata.classes),
            "pixel_size": metadata.pixel_size,
        },
        source="gigaseg checkpoint",
    )


def _to_torchscript(
    model: UNet, metadata: ModelMetadata, example: torch.Tensor, path: Path
) -> None:
    with torch.no_grad():
        traced = torch.jit.trace(model, example)  # type: ignore[no-untyped-call]
    files = {
        TORCHSCRIPT_EXTRA_FILE: metadata.to_json(),
        f"{CARD_KEY}.json": model_card(model, metadata).to_json(),
    }
    torch.jit.save(traced, str(path), _extra_files=files)


def _to_onnx(model: UNet, metadata: ModelMetadata, example: torch.Tensor, path: Path) -> None:
    import onnx

    axes = {0: "batch", 2: "height", 3: "width"}
    torch.onnx.export(
        model,
        (example,),
        str(path),
        dynamo=False,
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": axes, "logits": axes},
        opset_version=ONNX_OPSET,
    )
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, metadata.to_json()
    entry = proto.metadata_props.add()
    entry.key, entry.value = CARD_KEY, model_card(model, metadata).to_json()
    onnx.save(proto, str(path))
