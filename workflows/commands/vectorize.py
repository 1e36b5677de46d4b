"""``gigaseg vectorize``: label raster or store -> polygons file (wraps pipeline.vectorize)."""

from __future__ import annotations

import argparse
import sys

from workflows.commands._report import add_report_argument, check_report, write_report

__all__ = ["HELP", "add_arguments", "main"]

HELP = "trace a store or label raster into exact polygons (GeoJSON, GeoParquet, GPKG, QuPath...)"


def _connectivity(text: str) -> int:
    if text not in ("4", "8"):
        raise argparse.ArgumentTypeError(f"connectivity must be 4 or 8, not {text!r}")
    return int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``vectorize`` options."""
    from pipeline.settings import RunnerSettings
    from workflows.commands.options import add_settings

    parser.add_argument("input", help="gigaseg store, or single-band label/probability raster")
    parser.add_argument("--out", required=True, help="output file (format from its extension)")
    parser.add_argument(
        "--format",
        default=None,
        help="geojson, geojsonseq, geoparquet, gpkg, flatgeobuf or qupath (default: extension)",
    )
    parser.add_argument(
        "--class",
        dest="classes",
        action="append",
        default=None,
        metavar="NAME|ID",
        help="class to export (repeatable; default: every non-background class)",
    )
    parser.add_argument("--threshold", type=float, default=None, help="for probability input")
    parser.add_argument("--min-area", type=float, default=0.0, help="m² (µm² for slides)")
    parser.add_argument("--fill-holes", type=float, default=0.0, metavar="AREA", help="m²/µm²")
    parser.add_argument(
        "--simplify", type=float, default=0.0, metavar="TOLERANCE", help="map units or metres"
    )
    parser.add_argument("--regularize", action="store_true", help="square building outlines")
    parser.add_argument("--centerlines", action="store_true", help="road centre-lines")
    parser.add_argument("--connectivity", type=_connectivity, default=4, help="4 or 8 (4)")
    parser.add_argument(
        "--instances",
        default=None,
        choices=["boundary", "distance", "none"],
        help="separate touching objects (default: boundary for boundary-trained models, else none)",
    )
    parser.add_argument(
        "--reach", type=float, default=None, metavar="DIST",
        help="instances: largest marker-to-pixel distance, m/µm (8 px)",
    )  # fmt: skip
    parser.add_argument(
        "--min-separation", type=float, default=None, metavar="DIST",
        help="instances (distance): minimum distance between markers, m/µm (4 px)",
    )  # fmt: skip
    parser.add_argument(
        "--marker-threshold", type=float, default=None, metavar="DIST",
        help="instances (distance): smallest marker distance to background, m/µm (2 px)",
    )  # fmt: skip
    parser.add_argument(
        "--min-marker-area", type=float, default=None, metavar="AREA",
        help="instances: drop marker components smaller than this, m²/µm² (keep all)",
    )  # fmt: skip
    parser.add_argument("--chunk", type=int, default=None, help="chunk side in pixels (4096)")
    parser.add_argument(
        "--object-type",
        default="detection",
        choices=["detection", "annotation"],
        help="QuPath objectType (detection)",
    )
    add_settings(parser, RunnerSettings, exclusive=(("workers", "scheduler"),))
    parser.add_argument(
        "--crs",
        default=None,
        help="output CRS for gpkg/flatgeobuf/geoparquet (e.g. EPSG:3857; default: the "
        "source's); GeoJSON stays EPSG:4326 (RFC 7946)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_report_argument(parser)


def main(args: argparse.Namespace) -> int:
    """Run ``pipeline.vectorize`` with the parsed options and print a summary."""
    from pipeline.settings import RunnerSettings
    from pipeline.vectorize import vectorize
    from workflows.commands.options import settings_from

    check_report(args)
    report = vectorize(
        args.input,
        args.out,
        format=args.format,
        classes=args.classes,
        threshold=args.threshold,
        min_area=args.min_area,
        fill_holes=args.fill_holes,
        simplify=args.simplify,
        regularize=args.regularize,
        centerlines=args.centerlines,
        connectivity=args.connectivity,
        chunk=args.chunk,
        runner=settings_from(args, RunnerSettings),
        overwrite=args.overwrite,
        progress=not args.no_progress,
        object_type=args.object_type,
        crs=args.crs,
        instances=args.instances,
        reach=args.reach,
        min_separation=args.min_separation,
        marker_threshold=args.marker_threshold,
        min_marker_area=args.min_marker_area,
    )
    data = report.to_dict()
    write_report(args, data)
    classes = ", ".join(f"{k} {v}" for k, v in data["per_class"].items()) or "none"
    print(
        f"{data['output']}: {data['features']} features ({classes}) from {data['chunks']} "
        f"chunks of {data['chunk']} px, {data['border_pieces']} border pieces merged into "
        f"{data['merged_features']}; {data['seconds']['total']:.1f} s",
        file=sys.stdout,
    )
    return 0
