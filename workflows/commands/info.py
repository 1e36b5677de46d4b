"""``gigaseg info``: what a source image or a prediction store holds."""

from __future__ import annotations

import argparse
import json

__all__ = ["HELP", "add_arguments", "main"]

HELP = "show what a source (GeoTIFF, URL, STAC item, slide, Zarr) or a prediction store holds"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``info`` options."""
    parser.add_argument("path", help="source image or STORE.zarr")
    parser.add_argument("--level", type=int, default=None, help="slide pyramid level")
    parser.add_argument("--mpp", type=float, default=None, help="slide target microns per pixel")
    parser.add_argument(
        "--assets", default=None, help="STAC item assets to stack (keys or common names)"
    )


def main(args: argparse.Namespace) -> int:
    """Print a JSON summary of ``args.path``."""
    from pipeline.store import is_store, read_attrs, tile_counts

    if is_store(args.path) and (read_attrs(args.path).get("status") is not None):
        attrs = read_attrs(args.path)
        info = {"store": args.path, **attrs, "tiles": tile_counts(args.path)}
        info.pop("report", None)
    else:
        from pipeline.read import open_source
        from pipeline.settings import parse_assets

        assets = parse_assets(args.assets)
        info = open_source(args.path, level=args.level, mpp=args.mpp, assets=assets).describe()
    print(json.dumps(info, indent=2, default=str))
    return 0
