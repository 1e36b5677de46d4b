"""Reading YAML we did not write: workflow files, training configs, ``--set`` values.

YAML anchors and aliases let a few hundred bytes describe a structure of billions of nodes
(the "billion laughs" alias bomb: nine anchors of nine aliases each). ``yaml.safe_load``
builds it cheaply, because aliases share objects, but anything that walks the value --
validation, or an error message quoting ``got {value!r}`` -- expands it and runs out of
memory. So :func:`load_yaml` counts the nodes the document expands to *before* constructing
Python objects, and refuses a document above :data:`MAX_NODES`;
:func:`pipeline.errors.short_repr` bounds what an error message quotes of any value.

>>> load_yaml("{a: &x [1, 2], b: *x}", source="example")
{'a': [1, 2], 'b': [1, 2]}
"""

from __future__ import annotations

from typing import Any

import yaml

from pipeline.errors import ConfigError

__all__ = ["MAX_NODES", "load_yaml"]

#: Most nodes a document may expand to once aliases are followed. A large workflow file (a
#: thousand inputs with their own settings) is a few tens of thousands of nodes.
MAX_NODES = 200_000


class _TooBig(Exception):
    """The expanded document exceeds the node budget (or refers to itself)."""


def _expanded_size(node: yaml.Node, limit: int) -> int:
    """Count the nodes ``node`` expands to, following aliases, stopping past ``limit``."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(item: yaml.Node) -> int:
        key = id(item)
        if key in sizes:
            return sizes[key]
        if key in active:  # a recursive structure expands without end
            raise _TooBig
        active.add(key)
        total = 1
        if isinstance(item, yaml.SequenceNode):
            for child in item.value:
                total += size(child)
                if total > limit:
                    raise _TooBig
        elif isinstance(item, yaml.MappingNode):
            for k, v in item.value:
                total += size(k) + size(v)
                if total > limit:
                    raise _TooBig
        active.discard(key)
        sizes[key] = total
        return total

    return size(node)


class _BoundedLoader(yaml.SafeLoader):  # type: ignore[misc]  # untyped base
    """``SafeLoader`` that checks the expanded size of each document before constructing it."""

    max_nodes = MAX_NODES

    def construct_document(self, node: yaml.Node) -> Any:
        try:
            _expanded_size(node, self.max_nodes)
        except _TooBig:
            raise yaml.YAMLError(
                f"its aliases expand to more than {self.max_nodes} values (an alias bomb, or "
                "an alias that refers to itself); write the values out instead of aliasing"
            ) from None
        except RecursionError:
            raise yaml.YAMLError("it nests too deeply to be a configuration") from None
        return super().construct_document(node)


def load_yaml(text: str, *, source: str, max_nodes: int = MAX_NODES) -> Any:
    """Parse one YAML document safely and with bounded expansion.

    Parameters
    ----------
    text
        The YAML text.
    source
        What the text is (a file path, ``--set tiling.tile``...), named in errors.
    max_nodes
        Refuse documents whose aliases expand to more nodes than this.

    Raises
    ------
    ConfigError
        The text is not valid YAML, or expands past ``max_nodes``; one line naming ``source``
        (and the line of a syntax error).
    """
    loader = _BoundedLoader(text)
    loader.max_nodes = max_nodes
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or exc
        raise ConfigError(f"{source}{where}: not valid YAML ({problem})") from exc
    finally:
        loader.dispose()
