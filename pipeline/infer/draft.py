"""Draft a model card from what a model file reveals (``gigaseg model-card``).

An ONNX file states its input and output names, shapes and element types, and its graph
ends in the operator that made the output (``Softmax``, ``Sigmoid``...): the draft fills in
the layout (a small last axis beside large spatial ones means NHWC), channels, a fixed size,
the classes count and the activation already applied. A gigaseg checkpoint or export (and
any file with an embedded card) gives a complete card. What a file cannot say -- class
names, normalisation, pixel size, often the halo -- is left as ``TODO`` placeholders, which
:func:`~pipeline.infer.card.parse_card` refuses until they are filled in.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.errors import CheckpointError
from pipeline.infer.card import CARD_KEY, guess_layout, parse_card
from pipeline.infer.model import ModelInfo, describe_model, model_kind, pick_output

__all__ = ["card_from_info", "draft_card"]

_ACTIVATION_OPS = {"Softmax": "softmax", "LogSoftmax": "none", "Sigmoid": "sigmoid"}
#: Last operators that leave logits: a linear map of the features (the draft says ``none``).
_LOGIT_OPS = frozenset({"Conv", "ConvTranspose", "Add", "Gemm", "MatMul", "BatchNormalization",
                        "Resize", "Upsample"})  # fmt: skip
_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(uint8)": "uint8"}


def card_from_info(info: ModelInfo) -> dict[str, Any]:
    """Return a complete card for a model whose metadata says everything (gigaseg checkpoints)."""
    from pipeline.export.features import class_color

    norm: dict[str, Any] = {}
    if info.mean is not None and info.std is not None:
        norm = {"mean": list(info.mean), "std": list(info.std)}
    colors = info.colors or (None,) * len(info.classes)
    card = {
        "card": 1,
        "name": info.name,
        "input": {
            "layout": info.input_layout,
            "channels": int(info.in_channels or 1),
            "bands": None if info.bands is None else list(info.bands),
            "dtype": info.input_dtype,
            "normalisation": norm,
            "size": info.fixed_size,
            "multiple": info.alignment,
        },
        "halo": info.halo,
        "output": {
            "layout": info.output_layout,
            "activation": info.applied,
            "padding": info.padding,
        },
        "classes": [
            {"name": name, "color": list(color or class_color(i + 1))}
            for i, (name, color) in enumerate(zip(info.classes, colors, strict=True))
        ],
        "pixel_size": info.pixel_size,
        "pixel_unit": info.pixel_unit,
    }
    return parse_card(card, source=info.path).to_dict()


def _onnx_draft(path: str) -> tuple[dict[str, Any], list[str]]:
    import onnx
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    given, every = session.get_inputs()[0], session.get_outputs()
    ranks = [(o.name, len(o.shape) if o.shape is not None else None) for o in every]
    made = every[pick_output(ranks, None, Path(path).name)]
    in_shape, out_shape = list(given.shape), list(made.shape)
    notes = [
        f"input {given.name} {in_shape} {given.type}; output {made.name} {out_shape} {made.type}"
    ]
    if len(every) > 1:
        others = ", ".join(f"{o.name} {list(o.shape)}" for o in every if o is not made)
        notes.append(f"output.name {made.name} taken among {len(every)} outputs (also: {others})")
    proto = onnx.load(path, load_external_data=False)
    producer = next((n for n in proto.graph.node if made.name in n.output), None)
    op = producer.op_type if producer is not None else ""
    if op == "Transpose" and producer is not None:  # a layout permute after the activation
        inner = next((n for n in proto.graph.node if producer.input[0] in n.output), None)
        op = inner.op_type if inner is not None else op
    layout_in = guess_layout(in_shape)
    layout_out = guess_layout(out_shape)
    channel_axis = 3 if layout_in == "NHWC" else 1
    out_axis = 3 if layout_out == "NHWC" else 1
    channels = in_shape[channel_axis] if len(in_shape) == 4 else None
    outputs = out_shape[out_axis] if len(out_shape) == 4 else None
    spatial = in_shape[1:3] if layout_in == "NHWC" else in_shape[2:4]
    size = spatial[0] if len(set(spatial)) == 1 and isinstance(spatial[0], int) else None
    activation = _ACTIVATION_OPS.get(op) or ("none" if op in _LOGIT_OPS else None)
    notes.append(f"last operator {op or '?'}")
    card = _skeleton(
        path,
        layout_in=layout_in,
        channels=channels if isinstance(channels, int) else None,
        dtype=_DTYPES.get(given.type, "float32"),
        size=size,
        layout_out=layout_out,
        activation=activation,
        outputs=outputs if isinstance(outputs, int) else None,
    )
    if len(every) > 1:
        card["output"]["name"] = made.name
    return card, notes


_TORCH_OPS = {"aten::softmax": "softmax", "aten::log_softmax": "none", "aten::sigmoid": "sigmoid",
              "aten::_convolution": "none", "aten::conv2d": "none",
              "aten::conv_transpose2d": "none", "aten::linear": "none"}  # fmt: skip
_PROBE = 256  # a multiple of every U-Net alignment up to 2**8


def _torchscript_draft(path: str) -> tuple[dict[str, Any], list[str]]:
    """Draft from a TorchScript file, which records no shapes.

    Its first convolution's weight gives the input channels, one probe run (NCHW, else
    NHWC) the layout and the output shape, and its last activation or convolution operator
    what the output already is.
    """
    import torch

    from pipeline.infer.model import load_torchscript

    module, _ = load_torchscript(path)
    weights = [p for _, p in module.named_parameters() if p.dim() == 4]
    channels = int(weights[0].shape[1]) if weights else None
    dtype = torch.float16 if weights and weights[0].dtype == torch.float16 else torch.float32
    notes = [f"TorchScript file {path} records no shapes"]
    layout_in = layout_out = None
    out_shape: list[int] | None = None
    for layout in ("NCHW", "NHWC") if channels else ():
        c = int(channels or 0)
        shape = (1, c, _PROBE, _PROBE) if layout == "NCHW" else (1, _PROBE, _PROBE, c)
        try:
            with torch.inference_mode():
                out = module(torch.zeros(shape, dtype=dtype))
        except Exception:  # the other layout is tried; else the card says it
            continue
        if isinstance(out, dict):
            out = list(out.values())
        if isinstance(out, (tuple, list)):
            ranks = [(str(i), v.dim() if hasattr(v, "dim") else None) for i, v in enumerate(out)]
            out = out[pick_output(ranks, None, Path(path).name)]
        layout_in, out_shape = layout, [int(d) for d in out.shape]
        layout_out = guess_layout(out_shape) or (layout if len(out_shape) == 4 else None)
        notes.append(f"probe: input {list(shape)} ({layout}) gives output {out_shape}")
        break
    ops = [_TORCH_OPS[n.kind()] for n in module.inlined_graph.nodes() if n.kind() in _TORCH_OPS]
    activation = ops[-1] if ops else None
    outputs = None
    if out_shape is not None and len(out_shape) == 4:
        outputs = out_shape[3] if layout_out == "NHWC" else out_shape[1]
    card = _skeleton(
        path,
        layout_in=layout_in,
        channels=channels or None,
        dtype="float16" if dtype == torch.float16 else "float32",
        size=None,
        layout_out=layout_out,
        activation=activation,
        outputs=outputs,
    )
    return card, notes


def _skeleton(
    path: str | Path,
    *,
    layout_in: str | None,
    channels: int | None,
    dtype: str,
    size: int | None,
    layout_out: str | None,
    activation: str | None,
    outputs: int | None,
) -> dict[str, Any]:
    """Return a card with what a model file revealed and ``TODO``s for everything else."""
    classes: list[Any]
    if outputs is not None:
        classes = [{"name": f"TODO: name of channel {i}", "color": None} for i in range(outputs)]
    else:
        classes = ["TODO: one name per output channel"]
    return {
        "card": 1,
        "name": Path(path).stem,
        "input": {
            "layout": layout_in or "TODO: NCHW or NHWC",
            "channels": channels if channels is not None else "TODO: input channels",
            "bands": None,
            "dtype": dtype,
            "normalisation": {
                "mean": "TODO: per-band mean (or bit_depth / percentiles)",
                "std": "TODO: per-band std",
            },
            "size": size,
            "multiple": "TODO: size/offset granularity, 2**(number of 2x poolings)",
        },
        "halo": "measure",
        "output": {
            "layout": layout_out or "TODO: NCHW or NHWC",
            "activation": activation or "TODO: none, sigmoid, softmax or probabilities",
        },
        "classes": classes,
        "pixel_size": "TODO: training pixel size (um for slides, m for maps)",
        "pixel_unit": "TODO: um or m",
    }


def draft_card(
    path: str | Path, *, complete: Callable[[dict[str, Any]], dict[str, Any]] | None = None
) -> tuple[dict[str, Any], list[str]]:
    """Return a card for ``path`` (complete, or a draft with TODOs) and notes on its origin.

    Parameters
    ----------
    path
        An ONNX, TorchScript or gigaseg safetensors model file (gigaseg checkpoints need
        their loader registered, as importing :mod:`pipeline.predict` does).
    complete
        Hook adding the geometry of a gigaseg architecture to exported metadata (as for
        :func:`~pipeline.infer.model.describe_model`).

    Returns
    -------
    card, notes
        The card as plain data, and one-line notes on what the file revealed.
    """
    path = str(path)
    if not Path(path).is_file():
        raise CheckpointError(f"model {path} does not exist; check the path")
    kind = model_kind(path)
    info, _ = describe_model(path, kind=kind, complete=complete)
    if info.card is not None:
        return info.card, [f"card found beside or embedded in {path} ({CARD_KEY})"]
    if info.halo is not None and info.classes:
        return card_from_info(info), [f"complete card from the gigaseg metadata in {path}"]
    if kind == "onnx":
        return _onnx_draft(path)
    if kind == "torchscript":
        return _torchscript_draft(path)
    card = {
        "card": 1,
        "name": Path(path).stem,
        "input": {
            "layout": "TODO: NCHW or NHWC",
            "channels": "TODO: input channels",
            "normalisation": {"mean": "TODO", "std": "TODO"},
            "multiple": 32,
        },
        "halo": "measure",
        "output": {
            "layout": "TODO: NCHW or NHWC",
            "activation": "TODO: none, sigmoid, softmax or probabilities",
        },
        "classes": ["TODO: one name per output channel"],
        "pixel_size": "TODO: training pixel size",
        "pixel_unit": "TODO: um or m",
    }
    return card, [f"TorchScript file {path} records no shapes: fill in the TODOs"]
