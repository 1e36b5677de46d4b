"""Orchestration: workflow files, clusters and the ``gigaseg`` command line.

Imports point one way: ``workflows`` uses ``pipeline`` and ``unet``, never the reverse.
"""

from __future__ import annotations

__all__: list[str] = []
