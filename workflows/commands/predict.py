"""``gigaseg predict``: segment one large image into a Zarr store (wraps pipeline.predict)."""

from __future__ import annotations

import argparse
import sys

from workflows.commands._report import add_report_argument, check_report, write_report

__all__ = ["HELP", "add_arguments", "main"]

HELP = "segment a large image tile by tile into a Zarr store (probabilities, labels, ledger)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``predict`` options (derived from :mod:`pipeline.settings`)."""
    from pipeline.settings import InferenceSettings, ReadSettings, RunnerSettings, TilingSettings
    from workflows.commands.options import add_settings

    parser.add_argument("source", help="GeoTIFF/COG/VRT, slide (SVS, NDPI, TIFF) or Zarr array")
    parser.add_argument("--model", required=True, help=".safetensors, TorchScript .pt or .onnx")
    parser.add_argument("--out", required=True, help="output Zarr store (STORE.zarr)")
    add_settings(parser, TilingSettings)
    add_settings(parser, InferenceSettings)
    add_settings(parser, ReadSettings, exclusive=(("level", "mpp"),))
    add_settings(parser, RunnerSettings, exclusive=(("workers", "scheduler"),))
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="finish an interrupted store")
    mode.add_argument("--overwrite", action="store_true", help="replace an existing store")
    parser.add_argument(
        "--verify",
        action="store_true",
        help="with --resume: recompute done tiles whose chunks are missing or corrupt",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_report_argument(parser)


def main(args: argparse.Namespace) -> int:
    """Run ``pipeline.predict`` with the parsed options and print the report."""
    from pipeline.predict import predict
    from pipeline.settings import InferenceSettings, ReadSettings, RunnerSettings, TilingSettings
    from workflows.commands.options import settings_from

    check_report(args)
    report = predict(
        args.source,
        args.model,
        args.out,
        tiling=settings_from(args, TilingSettings),
        inference=settings_from(args, InferenceSettings),
        read=settings_from(args, ReadSettings),
        runner=settings_from(args, RunnerSettings),
        resume=args.resume,
        overwrite=args.overwrite,
        verify=args.verify,
        progress=not args.no_progress,
    )
    data = report.to_dict()
    write_report(args, data)
    print(
        f"{data['store']}: {data['tiles_computed']} tiles computed, {data['tiles_skipped']} "
        f"skipped, {data['tiles_already_done']} already done of {data['tiles_total']}; "
        f"{data['megapixels']:.1f} Mpx in {data['seconds']['total']:.1f} s "
        f"({data['mpx_per_s']:.2f} Mpx/s, {data['precision']})",
        file=sys.stdout,
    )
    neck = data.get("bottleneck") or {}
    if neck:
        print(
            f"bound by {neck['bound']}: model busy {100 * neck['model_busy']:.0f}% of the time; "
            f"{neck['advice']}",
            file=sys.stdout,
        )
    for note in report.notes:  # what was chosen (resolution, tissue) or not guaranteed
        print(f"gigaseg predict: {note}", file=sys.stderr)
    return 0
