"""Inference-time model optimisation that keeps the output exact (float32, <= 1e-4).

:func:`fold_batch_norm` folds each evaluation-mode ``BatchNorm2d`` into the ``Conv2d`` before
it (``w' = w * gamma / sqrt(var + eps)``, ``b' = (b - mean) * gamma / sqrt(var + eps) + beta``),
so a U-Net block runs one convolution instead of a convolution and a normalisation pass over
the whole feature map. The :class:`~pipeline.infer.predictor.Predictor` also runs torch models
in ``channels_last`` layout, where oneDNN's convolutions are fastest on CPU. Measured on this
project's 2-core AMD EPYC, U-Net base 16 depth 4, fp32, one 1248² window, medians of 3 calls
side by side: contiguous 0.051 Mpx/s, channels_last 0.087, channels_last + folding 0.093.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

__all__ = ["fold_batch_norm"]


def fold_batch_norm(network: Any) -> Any:
    """Return a copy of ``network`` with every ``Conv2d -> BatchNorm2d`` pair folded.

    Pairs are found inside ``nn.Sequential`` containers (where gigaseg's U-Net blocks keep
    them); the batch norm is replaced by ``nn.Identity``. TorchScript modules, networks in
    training mode and networks without such pairs are returned unchanged.
    """
    import torch
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    if not isinstance(network, torch.nn.Module) or isinstance(network, torch.jit.ScriptModule):
        return network
    if network.training or not _pairs(network):
        return network
    folded = copy.deepcopy(network)
    for sequence, conv_name, norm_name in _pairs(folded):
        conv, norm = sequence._modules[conv_name], sequence._modules[norm_name]
        sequence._modules[conv_name] = fuse_conv_bn_eval(conv, norm)
        sequence._modules[norm_name] = torch.nn.Identity()
    return folded


def _pairs(network: Any) -> list[tuple[Any, str, str]]:
    import torch

    found = []
    for module in network.modules():
        if not isinstance(module, torch.nn.Sequential):
            continue
        names = list(module._modules)
        for first, second in itertools.pairwise(names):
            conv, norm = module._modules[first], module._modules[second]
            if (
                isinstance(conv, torch.nn.Conv2d)
                and isinstance(norm, torch.nn.BatchNorm2d)
                and norm.track_running_stats
                and norm.running_mean is not None
            ):
                found.append((module, first, second))
    return found
