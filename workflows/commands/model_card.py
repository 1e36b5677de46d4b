"""``gigaseg model-card``: write a model card (complete, or a draft with TODOs) for a model."""

from __future__ import annotations

import argparse
import sys

__all__ = ["HELP", "add_arguments", "main"]

HELP = "write a model card for an ONNX/TorchScript/gigaseg model (a draft with TODOs if needed)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``model-card`` options."""
    parser.add_argument("model", metavar="MODEL", help=".onnx, TorchScript .pt or .safetensors")
    parser.add_argument(
        "--out", default=None, metavar="F", help="write the card here (default: stdout)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing F")


def main(args: argparse.Namespace) -> int:
    """Draft the card and write it (YAML), listing the TODOs left to fill in."""
    from pathlib import Path

    import yaml

    from pipeline.export import check_output, commit, temporary_path
    from pipeline.infer.card import find_todos
    from pipeline.infer.draft import draft_card
    from pipeline.predict import complete_metadata

    card, notes = draft_card(args.model, complete=complete_metadata)
    todos = find_todos(card)
    header = [f"# model card for {Path(args.model).name} (gigaseg model-card)"]
    header += [f"# {note}" for note in notes]
    if todos:
        header.append(f"# fill in before use: {', '.join(todos)}")
    text = (
        "\n".join(header)
        + "\n"
        + yaml.safe_dump(card, sort_keys=False, default_flow_style=None, allow_unicode=True)
    )
    if args.out is None:
        sys.stdout.write(text)
    else:
        out = check_output(Path(args.out), overwrite=args.overwrite)
        tmp = temporary_path(out)
        tmp.write_text(text, encoding="utf-8")
        commit(tmp, out)
        left = f"; fill in {len(todos)} TODO(s): {', '.join(todos)}" if todos else ""
        print(f"wrote {out}{left}", file=sys.stderr)
    return 0
