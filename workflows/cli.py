"""The ``gigaseg`` command: a thin shell over the Python API.

Each subcommand lives in its own module under :mod:`workflows.commands` and exposes
``HELP`` (one line), ``add_arguments(parser)`` and ``main(args) -> int``. Heavy imports
(torch, dask, rasterio) happen inside ``main`` so ``gigaseg --help`` stays instant.

Errors raised on purpose (:class:`pipeline.errors.GigasegError`, and the ``OSError`` family
for files) print one line and exit 1; usage errors exit 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import logging
import sys
import warnings
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from types import ModuleType
from typing import NoReturn, TextIO

__all__ = ["COMMANDS", "build_parser", "main"]

#: Subcommand name -> module under ``workflows.commands``. Order is the order in ``--help``.
COMMANDS: dict[str, str] = {
    "run": "run",
    "predict": "predict",
    "vectorize": "vectorize",
    "export": "export",
    "train": "train",
    "evaluate": "evaluate",
    "info": "info",
    "status": "status",
    "preview": "preview",
    "export-model": "export_model",
    "model-card": "model_card",
}


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _version() -> str:
    try:
        return version("gigaseg")
    except PackageNotFoundError:  # running from a source tree without an install
        return "0+unknown"


def _load_commands() -> dict[str, ModuleType]:
    modules: dict[str, ModuleType] = {}
    for name, module in COMMANDS.items():
        try:
            modules[name] = importlib.import_module(f"workflows.commands.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"workflows.commands.{module}":
                raise
    return modules


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, ModuleType]]:
    """Build the top-level parser and return it with the loaded command modules.

    Returns
    -------
    parser, commands
        The parser, and a mapping from subcommand name to its module.
    """
    parser = _Parser(
        prog="gigaseg",
        description="Segment gigapixel images with a U-Net and export exact vector outlines.",
    )
    parser.add_argument("--version", action="version", version=f"gigaseg {_version()}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands = _load_commands()
    for name, module in commands.items():
        sub = subparsers.add_parser(name, help=module.HELP, description=module.HELP)
        sub.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks"
        )
        module.add_arguments(sub)
    return parser, commands


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``gigaseg`` command line.

    Parameters
    ----------
    argv
        Arguments without the program name; ``sys.argv[1:]`` when ``None``.

    Returns
    -------
    int
        The process exit status: 0 on success, 1 on a reported error, 2 on a usage error.
    """
    from pipeline.errors import GigasegError

    parser, commands = build_parser()
    args = parser.parse_args(argv)
    if not args.debug:
        # Dask's INFO lines (connections closing at shutdown) are not for users.
        logging.getLogger("distributed").setLevel(logging.WARNING)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        with warnings.catch_warnings():
            warnings.showwarning = functools.partial(_show_warning, args.command)
            return int(commands[args.command].main(args) or 0)
    except KeyboardInterrupt:
        print("gigaseg: interrupted", file=sys.stderr)
        return 130
    except (GigasegError, OSError) as exc:
        if args.debug:
            raise
        print(f"gigaseg {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 1


def _show_warning(
    command: str,
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """Print gigaseg's own warnings as one line, like its errors; others as Python does."""
    from pipeline.errors import GigasegWarning

    if issubclass(category, GigasegWarning):
        text = " ".join(str(message).split())
        print(f"gigaseg {command}: warning: {text}", file=file or sys.stderr)
    else:
        _DEFAULT_SHOWWARNING(message, category, filename, lineno, file, line)


_DEFAULT_SHOWWARNING = warnings.showwarning


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
