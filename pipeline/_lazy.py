"""Package exports imported on first use (PEP 562 module ``__getattr__``).

A package ``__init__`` that re-exports its stages eagerly makes every ``import pipeline`` pay
for shapely, pyarrow, pydantic, pyproj... even when the command only predicts. With
:func:`lazy_exports` the package names each export's module once and imports it when the name
is first read; ``__all__``, ``from package import name`` and ``dir()`` behave as before.

Examples
--------
>>> getattr_, dir_ = lazy_exports("pipeline", {"pipeline.errors": ["ConfigError"]})
>>> getattr_("ConfigError").__name__
'ConfigError'
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, Sequence[str]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Return a module ``__getattr__`` and ``__dir__`` that import ``exports`` on first use.

    Parameters
    ----------
    package
        The package's ``__name__``.
    exports
        Module -> the names it defines that the package exports. A name must not be a
        submodule of ``package`` too (importing that submodule would rebind the name to it).

    Returns
    -------
    getattr_, dir_
        Assign them to the package's ``__getattr__`` and ``__dir__``.
    """
    where = {name: module for module, names in exports.items() for name in names}

    def getattr_(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)  # later reads skip this function
        return value

    def dir_() -> list[str]:
        return sorted({*vars(sys.modules[package]), *where})

    return getattr_, dir_
