"""Stage 3: infer — run any model on tile windows (this package never imports ``unet``)."""

from __future__ import annotations

from pipeline.infer.model import (
    LOAD_COUNTS,
    LOADERS,
    ModelInfo,
    ModelRef,
    cached_model,
    describe_model,
    file_sha256,
    model_kind,
    register_loader,
    with_overrides,
)
from pipeline.infer.predictor import (
    PRECISIONS,
    Predictor,
    activate,
    cpu_supports_bf16,
    model_seconds,
    resolve_device,
    resolve_precision,
)
from pipeline.infer.reference import reference_predict
from pipeline.infer.tile import predict_tile
from pipeline.infer.tta import TTA_COUNTS, parse_tta, with_tta

__all__ = [
    "LOADERS",
    "LOAD_COUNTS",
    "PRECISIONS",
    "TTA_COUNTS",
    "ModelInfo",
    "ModelRef",
    "Predictor",
    "activate",
    "cached_model",
    "cpu_supports_bf16",
    "describe_model",
    "file_sha256",
    "model_kind",
    "model_seconds",
    "parse_tta",
    "predict_tile",
    "reference_predict",
    "register_loader",
    "resolve_device",
    "resolve_precision",
    "with_overrides",
    "with_tta",
]
