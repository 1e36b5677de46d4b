"""Stage 5: vectorize a label raster into exact polygons, merged across chunk borders.

``vectorize(input, out, ...)`` traces each chunk on a Dask worker
(:mod:`~pipeline.vectorize.polygons`), joins pieces across seams
(:mod:`~pipeline.vectorize.seams`), optionally separates touching objects exactly across
chunks (:mod:`~pipeline.vectorize.instances`, :mod:`~pipeline.vectorize.instance_tasks`),
cleans them in metres (:mod:`~pipeline.vectorize.cleanup`,
:mod:`~pipeline.vectorize.regularize`), draws road centre-lines
(:mod:`~pipeline.vectorize.centerlines`) and streams features to :mod:`pipeline.export`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline._lazy import lazy_exports

if TYPE_CHECKING:
    from pipeline.vectorize.centerlines import join_segments, prune_spurs, skeleton_segments
    from pipeline.vectorize.cleanup import fill_holes, polygonal_part, simplify_valid
    from pipeline.vectorize.georef import Frame, local_equal_area_crs
    from pipeline.vectorize.instance_tasks import instance_task, join_instances
    from pipeline.vectorize.instances import InstanceRules, expand_markers, instance_raster
    from pipeline.vectorize.polygons import (
        ChunkTrace,
        make_valid_polygonal,
        stable_ids,
        trace_chunk,
    )
    from pipeline.vectorize.regularize import dominant_angle, iou, regularize_building
    from pipeline.vectorize.run import VectorizeReport, instance_rules, plan_chunks, vectorize
    from pipeline.vectorize.seams import MergedPieces, merge_border_pieces
    from pipeline.vectorize.settings import FORMATS, VectorizeSettings, parse_format
    from pipeline.vectorize.source import LabelSource, open_labels, resolve_classes
    from pipeline.vectorize.tasks import Job, finish_lines, finish_polygons, trace_task

__all__ = [
    "FORMATS",
    "ChunkTrace",
    "Frame",
    "InstanceRules",
    "Job",
    "LabelSource",
    "MergedPieces",
    "VectorizeReport",
    "VectorizeSettings",
    "dominant_angle",
    "expand_markers",
    "fill_holes",
    "finish_lines",
    "finish_polygons",
    "instance_raster",
    "instance_rules",
    "instance_task",
    "iou",
    "join_instances",
    "join_segments",
    "local_equal_area_crs",
    "make_valid_polygonal",
    "merge_border_pieces",
    "open_labels",
    "parse_format",
    "plan_chunks",
    "polygonal_part",
    "prune_spurs",
    "regularize_building",
    "resolve_classes",
    "simplify_valid",
    "skeleton_segments",
    "stable_ids",
    "trace_chunk",
    "trace_task",
    "vectorize",
]

# Each name is imported from its module when first read (see pipeline._lazy).
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "pipeline.vectorize.centerlines": ["join_segments", "prune_spurs", "skeleton_segments"],
        "pipeline.vectorize.cleanup": ["fill_holes", "polygonal_part", "simplify_valid"],
        "pipeline.vectorize.georef": ["Frame", "local_equal_area_crs"],
        "pipeline.vectorize.instance_tasks": ["instance_task", "join_instances"],
        "pipeline.vectorize.instances": ["InstanceRules", "expand_markers", "instance_raster"],
        "pipeline.vectorize.polygons": [
            "ChunkTrace",
            "make_valid_polygonal",
            "stable_ids",
            "trace_chunk",
        ],
        "pipeline.vectorize.regularize": ["dominant_angle", "iou", "regularize_building"],
        "pipeline.vectorize.run": ["VectorizeReport", "instance_rules", "plan_chunks", "vectorize"],
        "pipeline.vectorize.seams": ["MergedPieces", "merge_border_pieces"],
        "pipeline.vectorize.settings": ["FORMATS", "VectorizeSettings", "parse_format"],
        "pipeline.vectorize.source": ["LabelSource", "open_labels", "resolve_classes"],
        "pipeline.vectorize.tasks": ["Job", "finish_lines", "finish_polygons", "trace_task"],
    },
)
