"""``gigaseg status``: tiles done / skipped / left in a prediction store."""

from __future__ import annotations

import argparse

__all__ = ["HELP", "add_arguments", "main"]

HELP = "show a prediction store's status and how many tiles are done, skipped and left"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``status`` options."""
    parser.add_argument("store", help="STORE.zarr written by gigaseg predict")


def main(args: argparse.Namespace) -> int:
    """Print ``status: done/skipped/left of total``; exit 0."""
    from pipeline.errors import StoreError
    from pipeline.store import is_store, read_attrs, tile_counts

    if not is_store(args.store):
        raise StoreError(f"{args.store} is not a gigaseg store (no zarr.json); check the path")
    attrs = read_attrs(args.store)
    counts = tile_counts(args.store)
    print(
        f"{args.store}: {attrs.get('status', 'unknown')}; tiles {counts['done']} done, "
        f"{counts['skipped']} skipped, {counts['left']} left of {counts['total']}"
    )
    return 0
