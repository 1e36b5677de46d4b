"""The ``--report FILE`` option shared by ``predict`` and ``vectorize``.

The report path is checked before any work starts (it exists without ``--overwrite``, or its
folder is missing or read-only: one line, nothing computed), and written under a temporary
name then renamed, like every other output.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["add_report_argument", "check_report", "write_report"]


def add_report_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--report FILE``."""
    parser.add_argument("--report", default=None, help="also write the run report as JSON here")


def check_report(args: argparse.Namespace) -> None:
    """Refuse an unusable ``--report`` path before the run (``--overwrite``/``--resume`` reuse)."""
    from pipeline.export.atomic import check_output

    if args.report:
        replace = bool(getattr(args, "overwrite", False) or getattr(args, "resume", False))
        check_output(args.report, overwrite=replace)


def write_report(args: argparse.Namespace, data: dict[str, Any]) -> None:
    """Write the report JSON to ``--report`` (temporary name, then rename)."""
    from pipeline.export.atomic import write_text

    if args.report:
        write_text(args.report, json.dumps(data, indent=2) + "\n")
