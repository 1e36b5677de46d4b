"""Training: patches in, checkpoints out (pure torch; data comes through a PatchSource).

``settings``   :class:`TrainSettings` and its parser
``losses``     BCE/CE, Dice, focal, with an ignore value
``augment``    flips, 90 degree rotations, brightness/contrast, noise
``schedule``   step-indexed learning-rate schedules
``metrics``    running confusion counts for validation
``device``     device and bf16 autocast selection
``checkpoint`` optimiser state beside a gigaseg checkpoint (no pickles)
``loop``       :func:`train`
"""

from __future__ import annotations

from unet.train.augment import augment_patch
from unet.train.checkpoint import load_optimizer_state, save_optimizer_state, state_path
from unet.train.device import cpu_supports_bf16, resolve_device, resolve_precision
from unet.train.loop import PatchLike, PatchSource, TrainResult, train
from unet.train.losses import dice_loss, focal_loss, get_loss, xent_loss
from unet.train.metrics import Confusion
from unet.train.schedule import learning_rate
from unet.train.settings import Augment, TrainSettings, parse_train_settings

__all__ = [
    "Augment",
    "Confusion",
    "PatchLike",
    "PatchSource",
    "TrainResult",
    "TrainSettings",
    "augment_patch",
    "cpu_supports_bf16",
    "dice_loss",
    "focal_loss",
    "get_loss",
    "learning_rate",
    "load_optimizer_state",
    "parse_train_settings",
    "resolve_device",
    "resolve_precision",
    "save_optimizer_state",
    "state_path",
    "train",
    "xent_loss",
]
