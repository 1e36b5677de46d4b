"""``gigaseg vectorize``: label raster or store -> polygons file (wraps pipeline.vectorize)."""

from __future__ import annotations

import argparse
import sys

from workflows.commands._report import add_report_argument, check_report, write_report

__all__ = ["HELP", "add_arguments", "main"]

HELP = "trace a store or label raster into exact polygons (GeoJSON, GeoParquet, GPKG, QuPath...)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``vectorize`` options."""
    from pipeline.settings import RunnerSettings
    from pipeline.vectorize.settings import VectorizeSettings
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
    add_settings(parser, VectorizeSettings)
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
    from pipeline.vectorize.settings import VectorizeSettings
    from workflows.commands.options import settings_from

    check_report(args)
    report = vectorize(
        args.input,
        args.out,
        settings_from(args, VectorizeSettings),
        format=args.format,
        runner=settings_from(args, RunnerSettings),
        overwrite=args.overwrite,
        progress=not args.no_progress,
        object_type=args.object_type,
        crs=args.crs,
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
