"""``gigaseg evaluate``: score a prediction against the truth (a table, and JSON on request)."""

from __future__ import annotations

import argparse

__all__ = ["HELP", "add_arguments", "main"]

HELP = "score a prediction (outlines, store or raster) against true outlines or labels"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``evaluate`` options."""
    parser.add_argument("prediction", help="GeoJSON/GeoPackage outlines, gigaseg store or raster")
    parser.add_argument("truth", help="true outlines/centre-lines (GeoJSON/GeoPackage) or labels")
    parser.add_argument(
        "--kind",
        default="auto",
        choices=["auto", "buildings", "roads", "pixels"],
        help="what to score (auto: lines -> roads, polygons -> buildings)",
    )
    parser.add_argument("--mask", default=None, help="prediction raster for pixel metrics")
    parser.add_argument("--iou", type=float, default=0.5, help="object match IoU (0.5)")
    parser.add_argument("--buffer", type=float, default=3.0, help="road tolerance, metres (3)")
    parser.add_argument("--threshold", type=float, default=0.5, help="for probability rasters")
    parser.add_argument("--min-area", type=float, default=0.0, help="drop smaller predictions, m²")
    parser.add_argument("--truth-property", default=None, help="truth property to filter on")
    parser.add_argument("--truth-class", default=None, help="keep truth where property == this")
    parser.add_argument(
        "--truth-instances",
        action="store_true",
        default=None,
        help="TRUTH is an instance-label raster (one id per object): object F1 and AJI "
        "(detected for one-class predictions when not given)",
    )
    parser.add_argument("--json", default=None, help="also write the scores as JSON here")


def main(args: argparse.Namespace) -> int:
    """Evaluate and print the table."""
    from pathlib import Path

    from pipeline.evaluate import evaluate

    result = evaluate(
        args.prediction,
        args.truth,
        kind=args.kind,
        mask=args.mask,
        iou_threshold=args.iou,
        buffer=args.buffer,
        threshold=args.threshold,
        min_area=args.min_area,
        truth_property=args.truth_property,
        truth_class=args.truth_class,
        truth_instances=args.truth_instances,
    )
    print(result.table())
    if args.json:
        target = Path(args.json)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(result.to_json() + "\n", encoding="utf-8")
        tmp.replace(target)
        print(f"scores: {target}")
    return 0
