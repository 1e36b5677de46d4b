"""``gigaseg predict``: segment one large image into a Zarr store (wraps pipeline.predict)."""

from __future__ import annotations

import argparse
import json
import sys

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
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--report", default=None, help="also write the run report as JSON here")


def main(args: argparse.Namespace) -> int:
    """Run ``pipeline.predict`` with the parsed options and print the report."""
    from pipeline.predict import predict
    from pipeline.settings import InferenceSettings, ReadSettings, RunnerSettings, TilingSettings
    from workflows.commands.options import settings_from

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
        progress=not args.no_progress,
    )
    data = report.to_dict()
    if args.report:
        from pathlib import Path

        Path(args.report).write_text(json.dumps(data, indent=2))
    print(
        f"{data['store']}: {data['tiles_computed']} tiles computed, {data['tiles_skipped']} "
        f"skipped, {data['tiles_already_done']} already done of {data['tiles_total']}; "
        f"{data['megapixels']:.1f} Mpx in {data['seconds']['total']:.1f} s "
        f"({data['mpx_per_s']:.2f} Mpx/s, {data['precision']})",
        file=sys.stdout,
    )
    return 0
