"""Segmentation losses on logits, with an ignore value for unscored pixels.

One output channel is a binary (sigmoid) model; more channels are a softmax model whose
channel 0 is background. Pixels labelled ``ignore`` (nodata, outside the hold-out...) add
nothing to any loss.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.nn import functional

__all__ = ["IGNORE", "dice_loss", "focal_loss", "get_loss", "xent_loss"]

IGNORE = 255


def _probabilities(logits: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)


def _one_hot(labels: torch.Tensor, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets shaped like the logits, and a ``(N, 1, H, W)`` float mask of scored pixels."""
    valid = labels != IGNORE
    clean = torch.where(valid, labels, torch.zeros_like(labels)).long()
    if channels == 1:
        target = (clean > 0).float().unsqueeze(1)
    else:
        target = functional.one_hot(clean, channels).permute(0, 3, 1, 2).float()
    return target, valid.unsqueeze(1).float()


def xent_loss(
    logits: torch.Tensor, labels: torch.Tensor, weights: Sequence[float] | None = None
) -> torch.Tensor:
    """Binary (one channel) or multi-class cross-entropy, averaged over scored pixels.

    ``weights`` (one per channel; multi-class only) scales each class's pixels, and the mean
    is taken over the weights, as :func:`torch.nn.functional.cross_entropy` does.
    """
    if logits.shape[1] == 1:
        target, mask = _one_hot(labels, 1)
        loss = functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
        return (loss * mask).sum() / mask.sum().clamp_min(1.0)
    weight = None
    if weights is not None:
        if len(weights) != logits.shape[1]:
            raise ValueError(
                f"{len(weights)} class weights for a model with {logits.shape[1]} outputs; "
                "give one weight per output channel"
            )
        weight = torch.tensor(list(weights), dtype=logits.dtype, device=logits.device)
    return functional.cross_entropy(logits, labels.long(), weight=weight, ignore_index=IGNORE)


def dice_loss(logits: torch.Tensor, labels: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice loss over the batch, averaged over foreground classes.

    A batch without foreground and without predicted foreground scores 0 loss (thanks to
    ``smooth``), so empty patches do not push the model towards predicting objects.
    """
    probabilities = _probabilities(logits)
    target, mask = _one_hot(labels, logits.shape[1])
    if logits.shape[1] > 1:  # channel 0 is background: score the classes
        probabilities, target = probabilities[:, 1:], target[:, 1:]
    probabilities = probabilities * mask
    target = target * mask
    dims = (0, 2, 3)
    intersection = (probabilities * target).sum(dims)
    total = probabilities.sum(dims) + target.sum(dims)
    return (1.0 - (2.0 * intersection + smooth) / (total + smooth)).mean()


def focal_loss(
    logits: torch.Tensor, labels: torch.Tensor, gamma: float = 2.0, alpha: float = 0.25
) -> torch.Tensor:
    """Focal loss (Lin et al. 2017): cross-entropy down-weighted on easy pixels."""
    target, mask = _one_hot(labels, logits.shape[1])
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits)
        ce = functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
        p_t = p * target + (1 - p) * (1 - target)
        alpha_t = alpha * target + (1 - alpha) * (1 - target)
        loss = alpha_t * (1 - p_t) ** gamma * ce
    else:
        log_p = torch.log_softmax(logits, dim=1)
        log_p_t = (log_p * target).sum(1, keepdim=True)
        loss = -((1 - log_p_t.exp()) ** gamma) * log_p_t
    return (loss * mask).sum() / mask.sum().clamp_min(1.0)


def get_loss(
    name: str, class_weights: Sequence[float] | None = None
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Return the loss function for a name in :data:`unet.train.settings.LOSSES`.

    Parameters
    ----------
    name
        ``bce+dice`` (default; ``ce+dice`` is the same), ``dice``, ``focal``, ``bce``/``ce``.
    class_weights
        Cross-entropy weight per output channel (multi-class models).

    Returns
    -------
    callable
        ``loss(logits, labels) -> scalar``.
    """
    if name in ("bce+dice", "ce+dice"):
        return lambda logits, labels: (
            xent_loss(logits, labels, class_weights) + dice_loss(logits, labels)
        )
    if name == "dice":
        return dice_loss
    if name == "focal":
        return focal_loss
    if name in ("bce", "ce"):
        return lambda logits, labels: xent_loss(logits, labels, class_weights)
    raise ValueError(f"unknown loss {name!r}")
