"""Orchestration: workflow files, clusters and the ``gigaseg`` command line.

Imports point one way: ``workflows`` uses ``pipeline`` and ``unet``, never the reverse.
``workflows.run(path_or_spec)`` runs a workflow file. It is imported eagerly because the
function shares its name with its module: the import below rebinds ``workflows.run`` from the
submodule to the function. Heavy libraries (dask, torch) are still imported on first use.
"""

from __future__ import annotations

from workflows.run import plan, run
from workflows.spec import Workflow, load_workflow

__all__ = ["Workflow", "load_workflow", "plan", "run"]
