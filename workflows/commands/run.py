"""``gigaseg run WORKFLOW.yaml``: a thin shell over :func:`workflows.run`."""

from __future__ import annotations

import argparse

__all__ = ["HELP", "add_arguments", "main"]

HELP = "run a workflow file (many scenes, one model) locally or on SLURM/PBS"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``run``'s options to ``parser``."""
    parser.add_argument("workflow", metavar="WORKFLOW.yaml", help="workflow file")
    parser.add_argument(
        "--cluster",
        metavar="local|slurm|pbs|ADDRESS",
        help="where to run; overrides cluster.type (an address like tcp://host:8786 connects)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue a run: skip complete scenes and exports, compute only unfinished tiles",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="validate, print the plan and the job script; run and submit nothing",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting, e.g. --set tiling.tile=512 (repeatable; values are YAML)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def main(args: argparse.Namespace) -> int:
    """Run the workflow; 0 when every scene succeeded."""
    from workflows.run import run
    from workflows.spec import parse_set

    report = run(
        args.workflow,
        cluster=args.cluster,
        resume=args.resume,
        dry_run=args.dry_run,
        overwrite=args.overwrite,
        overrides=parse_set(args.settings),
        progress=not args.no_progress,
    )
    return 0 if report.ok else 1
