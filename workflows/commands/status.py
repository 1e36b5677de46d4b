"""``gigaseg status``: tiles done / skipped / left in a prediction store."""

from __future__ import annotations

import argparse

__all__ = ["HELP", "add_arguments", "main"]

HELP = "show a prediction store's status and how many tiles are done, skipped and left"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``status`` options."""
    parser.add_argument("store", help="STORE.zarr written by gigaseg predict")
    parser.add_argument(
        "--verify",
        action="store_true",
        help="also check that every done tile's chunks exist and decode (reads the store)",
    )


def main(args: argparse.Namespace) -> int:
    """Print ``status: done/skipped/left of total``; exit 0 (1 when ``--verify`` finds damage)."""
    from pipeline.errors import StoreError
    from pipeline.store import is_store, read_attrs, tile_counts
    from pipeline.store.verify import damaged_tiles, describe_damage

    if not is_store(args.store):
        raise StoreError(f"{args.store} is not a gigaseg store (no zarr.json); check the path")
    attrs = read_attrs(args.store)
    counts = tile_counts(args.store)
    print(
        f"{args.store}: {attrs.get('status', 'unknown')}; tiles {counts['done']} done, "
        f"{counts['skipped']} skipped, {counts['left']} left of {counts['total']}"
    )
    if args.verify:
        damaged = damaged_tiles(args.store)
        if damaged:
            raise StoreError(describe_damage(args.store, damaged))
        print(f"{args.store}: verified {counts['done']} done tile(s): every chunk is readable")
    return 0
