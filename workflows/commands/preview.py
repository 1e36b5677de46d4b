"""``gigaseg preview``: a PNG thumbnail with the mask and/or outlines drawn over it."""

from __future__ import annotations

import argparse

__all__ = ["HELP", "add_arguments", "main"]

HELP = "draw a thumbnail of an image or store with its mask and/or vector outlines (PNG)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``preview`` options."""
    parser.add_argument("source", help="GeoTIFF/COG, slide, or gigaseg store (draws its labels)")
    parser.add_argument("--vectors", default=None, help="outlines written by gigaseg vectorize")
    parser.add_argument("--labels", default=None, help="store whose labels to draw over SOURCE")
    parser.add_argument("--out", required=True, help="output PNG")
    parser.add_argument("--size", type=int, default=1024, help="long side in pixels (1024)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing PNG")


def main(args: argparse.Namespace) -> int:
    """Render the preview and print where it went."""
    from pipeline.preview import render_preview

    path = render_preview(
        args.source,
        args.out,
        vectors=args.vectors,
        labels=args.labels,
        size=args.size,
        overwrite=args.overwrite,
    )
    print(path)
    return 0
