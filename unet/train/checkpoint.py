"""Training checkpoints: the model (a normal gigaseg checkpoint) plus the optimiser state.

``NAME.safetensors`` is an ordinary :func:`unet.save` checkpoint (so ``last`` and ``best`` can
be given straight to ``gigaseg predict``); its ``extra["train"]`` records the step, epoch,
history and settings. ``NAME.state.safetensors`` holds the AdamW moments as tensors with the
parameter groups as JSON. Neither file is a pickle.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from pipeline.errors import CheckpointError

__all__ = ["load_optimizer_state", "save_optimizer_state", "state_path"]


def state_path(checkpoint: str | Path) -> Path:
    """Return the optimiser-state file that sits beside ``checkpoint``."""
    checkpoint = Path(checkpoint)
    stem = checkpoint.name.removesuffix(".safetensors")
    return checkpoint.with_name(f"{stem}.state.safetensors")


def save_optimizer_state(optimizer: torch.optim.Optimizer, path: str | Path) -> None:
    """Write an optimiser's state dict as safetensors (tensors) + JSON (everything else).

    Parameters
    ----------
    optimizer
        The optimiser.
    path
        Destination; written under a temporary name and renamed.
    """
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, values in state["state"].items():
        for name, value in values.items():
            key = f"{index}.{name}"
            if isinstance(value, torch.Tensor):
                tensors[key] = value.detach().cpu().contiguous()
            else:
                scalars[key] = value
    header = {"param_groups": state["param_groups"], "scalars": scalars}
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata={"gigaseg-optimizer": json.dumps(header)})
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def load_optimizer_state(optimizer: torch.optim.Optimizer, path: str | Path) -> None:
    """Restore an optimiser written by :func:`save_optimizer_state`.

    Raises
    ------
    CheckpointError
        When the file is missing or does not match the optimiser's parameters.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"optimiser state {path} is missing; resume needs the .state.safetensors file "
            "written beside the checkpoint"
        )
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if "gigaseg-optimizer" not in metadata:
        raise CheckpointError(f"{path} is not a gigaseg optimiser state file")
    header = json.loads(metadata["gigaseg-optimizer"])
    tensors = load_file(str(path))
    state: dict[int, dict[str, Any]] = {}
    for key, value in [*tensors.items(), *header["scalars"].items()]:
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    # JSON turned tuples (AdamW's betas) into lists; give them back their type.
    groups = [
        {k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in group.items()}
        for group in header["param_groups"]
    ]
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"{path} does not match the model's parameters ({exc})") from exc
