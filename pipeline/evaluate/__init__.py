"""Evaluation: pixel metrics, building object F1 and road length metrics.

``pixels``    per-class IoU / Dice / precision / recall from accumulated counts
``objects``   SpaceNet one-to-one matching at IoU >= 0.5 through an STRtree
``lines``     length-based precision / recall of centre-lines within a buffer
``evaluate``  files in, scores out (vector or raster prediction against vector or raster truth)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline._lazy import lazy_exports

# ``evaluate`` is both a submodule and the function: imported now, so the function wins.
from pipeline.evaluate.evaluate import evaluate

if TYPE_CHECKING:
    from pipeline.evaluate.evaluate import (
        Evaluation,
        PredictionRaster,
        mask_to_polygons,
        open_prediction_raster,
    )
    from pipeline.evaluate.lines import LineMetrics, line_metrics
    from pipeline.evaluate.objects import ObjectMetrics, match_objects
    from pipeline.evaluate.pixels import IGNORE, PixelCounts, pixel_metrics

__all__ = [
    "IGNORE",
    "Evaluation",
    "LineMetrics",
    "ObjectMetrics",
    "PixelCounts",
    "PredictionRaster",
    "evaluate",
    "line_metrics",
    "mask_to_polygons",
    "match_objects",
    "open_prediction_raster",
    "pixel_metrics",
]

# Each name is imported from its module when first read (see pipeline._lazy).
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "pipeline.evaluate.evaluate": [
            "Evaluation",
            "PredictionRaster",
            "mask_to_polygons",
            "open_prediction_raster",
        ],
        "pipeline.evaluate.lines": ["LineMetrics", "line_metrics"],
        "pipeline.evaluate.objects": ["ObjectMetrics", "match_objects"],
        "pipeline.evaluate.pixels": ["IGNORE", "PixelCounts", "pixel_metrics"],
    },
)
