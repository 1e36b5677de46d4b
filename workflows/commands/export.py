"""``gigaseg export``: a store as a COG, or a slide run's tissue mask as QuPath annotations.

The labels (or one class's probabilities with ``--class``) become a Cloud-Optimized GeoTIFF;
``--tissue`` writes the mask that decided which slide tiles ran.
"""

from __future__ import annotations

import argparse
import json

__all__ = ["HELP", "add_arguments", "main"]

HELP = "write a store's labels, or one class's probabilities, as a Cloud-Optimized GeoTIFF"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``export`` options."""
    parser.add_argument("store", help="STORE.zarr written by gigaseg predict (complete)")
    parser.add_argument("--out", required=True, help="output .tif (a COG)")
    parser.add_argument(
        "--class",
        dest="class_name",
        default=None,
        metavar="NAME",
        help="export this class's probabilities (average overviews) instead of the labels",
    )
    parser.add_argument(
        "--tissue",
        action="store_true",
        help="export the tissue mask the slide run used, as QuPath GeoJSON annotations "
        "(level-0 pixels; --out F.geojson)",
    )
    parser.add_argument(
        "--resampling",
        default=None,
        help="overviews: mode (default) or nearest for labels; average (default) or nearest "
        "for --class",
    )
    parser.add_argument("--compress", default="deflate", help="deflate (default), zstd or lzw")
    parser.add_argument("--blocksize", type=int, default=512, help="COG tile size (512)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")


def main(args: argparse.Namespace) -> int:
    """Run :func:`pipeline.export.export_raster` and print its report as JSON."""
    from pipeline.export.raster import export_raster

    if args.tissue:
        from pipeline.errors import ConfigError
        from pipeline.export.tissue import export_tissue

        if args.class_name is not None or not str(args.out).endswith((".geojson", ".json")):
            raise ConfigError(
                "--tissue writes QuPath GeoJSON annotations: give --out F.geojson (and no --class)"
            )
        count = export_tissue(args.store, args.out, overwrite=args.overwrite)
        print(json.dumps({"store": args.store, "out": args.out, "tissue_annotations": count}))
        return 0
    report = export_raster(
        args.store,
        args.out,
        class_name=args.class_name,
        resampling=args.resampling,
        compress=args.compress,
        blocksize=args.blocksize,
        overwrite=args.overwrite,
    )
    print(json.dumps(report.to_dict(), indent=2))
    return 0
