"""Command-line options derived from the settings objects of :mod:`pipeline.settings`.

An option is declared once, as a field of a frozen settings class (default, help, flag);
:func:`add_settings` turns the fields into ``argparse`` options and :func:`settings_from`
builds the settings object back from the parsed arguments, so no command repeats a default.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, fields
from typing import Any, TypeVar

__all__ = ["add_settings", "flag_of", "settings_from"]

S = TypeVar("S")


def flag_of(item: Any) -> str | None:
    """Return the command-line flag of a settings field (``None`` when it has none)."""
    cli = item.metadata.get("cli")
    if cli == "":
        return None
    return str(cli or "--" + item.name.replace("_", "-"))


def add_settings(
    parser: argparse.ArgumentParser | Any,
    cls: type,
    *,
    exclude: tuple[str, ...] = (),
    exclusive: tuple[tuple[str, ...], ...] = (),
) -> None:
    """Add one option per field of the settings class ``cls``.

    Parameters
    ----------
    parser
        The (sub)command parser.
    cls
        A frozen dataclass whose fields were declared with :func:`pipeline.settings.option`.
    exclude
        Field names not offered on this command.
    exclusive
        Groups of field names that are mutually exclusive on the command line.
    """
    groups: dict[str, Any] = {}
    for names in exclusive:
        group = parser.add_mutually_exclusive_group()
        groups.update(dict.fromkeys(names, group))
    for item in fields(cls):
        flag = flag_of(item)
        if flag is None or item.name in exclude:
            continue
        meta = item.metadata
        default = None if item.default is MISSING else item.default
        shown = f" ({default})" if default not in (None, "", ()) else ""
        kwargs: dict[str, Any] = {
            "dest": item.name,
            "default": default,
            "help": f"{meta.get('help', '')}{shown}",
        }
        if isinstance(default, bool):  # a switch: --flag sets the opposite of the default
            kwargs["action"] = "store_false" if default else "store_true"
            kwargs["help"] = str(meta.get("help", ""))
            groups.get(item.name, parser).add_argument(flag, **kwargs)
            continue
        if meta.get("parse") is not None:
            kwargs["type"] = meta["parse"]
        if meta.get("choices") is not None:
            kwargs["choices"] = list(meta["choices"])
        if meta.get("metavar") is not None:
            kwargs["metavar"] = meta["metavar"]
        groups.get(item.name, parser).add_argument(flag, **kwargs)


def settings_from(args: argparse.Namespace, cls: type[S], **fixed: Any) -> S:
    """Build the settings object ``cls`` from parsed arguments (plus ``fixed`` values)."""
    values = {
        item.name: getattr(args, item.name)
        for item in fields(cls)  # type: ignore[arg-type]
        if hasattr(args, item.name)
    }
    values.update(fixed)
    return cls(**values)
