"""``gigaseg predict``: segment one large image into a Zarr store (wraps pipeline.predict)."""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["HELP", "add_arguments", "main"]

HELP = "segment a large image tile by tile into a Zarr store (probabilities, labels, ledger)"


def _halo(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"halo must be 'auto' or pixels, not {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``predict`` options."""
    parser.add_argument("source", help="GeoTIFF/COG/VRT, slide (SVS, NDPI, TIFF) or Zarr array")
    parser.add_argument("--model", required=True, help=".safetensors, TorchScript .pt or .onnx")
    parser.add_argument("--out", required=True, help="output Zarr store (STORE.zarr)")
    parser.add_argument("--tile", type=int, default=2048, help="core tile of one task (2048)")
    parser.add_argument("--patch", type=int, default=None, help="model call size in a task")
    parser.add_argument("--halo", type=_halo, default="auto", help="auto or pixels")
    parser.add_argument("--batch", type=int, default=4, help="patches per model call (4)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"], help="(auto)"
    )
    parser.add_argument("--bands", default=None, help="1-based source bands, e.g. 1,2,3")
    slide = parser.add_mutually_exclusive_group()
    slide.add_argument("--level", type=int, default=None, help="slide pyramid level")
    slide.add_argument("--mpp", type=float, default=None, help="slide target microns per pixel")
    parser.add_argument(
        "--probabilities", default="uint8", choices=["uint8", "float16", "float32"], help="(uint8)"
    )
    parser.add_argument("--threshold", type=float, default=0.5, help="binary label threshold")
    parser.add_argument("--classes", default=None, help="class names/count for a foreign model")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=None, help="local worker processes")
    where.add_argument("--scheduler", default=None, help="address of a running Dask scheduler")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="finish an interrupted store")
    mode.add_argument("--overwrite", action="store_true", help="replace an existing store")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--report", default=None, help="also write the run report as JSON here")


def main(args: argparse.Namespace) -> int:
    """Run ``pipeline.predict`` with the parsed options and print the report."""
    from pipeline.predict import predict

    report = predict(
        args.source,
        args.model,
        args.out,
        tile=args.tile,
        patch=args.patch,
        halo=args.halo,
        batch=args.batch,
        device=args.device,
        precision=args.precision,
        bands=args.bands,
        level=args.level,
        mpp=args.mpp,
        probabilities=args.probabilities,
        threshold=args.threshold,
        workers=args.workers,
        scheduler=args.scheduler,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        classes=args.classes,
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
