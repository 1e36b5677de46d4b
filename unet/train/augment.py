"""Augmentations for (bands, h, w) patches and their (h, w) labels (pure numpy).

Geometric transforms (flips, 90 degree rotations) move labels with pixels; photometric ones
(brightness, contrast, noise) act on the normalised pixels only. Every random choice comes from
the generator passed in, so a step's augmentation is reproducible from its seed.
"""

from __future__ import annotations

import numpy as np

from unet.train.settings import Augment

__all__ = ["augment_patch"]


def augment_patch(
    image: np.ndarray, label: np.ndarray, settings: Augment, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Apply random augmentations to one normalised patch and its labels.

    Parameters
    ----------
    image
        ``(bands, h, w)`` float32, already normalised.
    label
        ``(h, w)`` class ids (or a label of the model's output size, centred, for
        valid-padding models: geometric transforms about the centre keep it aligned).
    settings
        Which augmentations to apply.
    rng
        Random generator.

    Returns
    -------
    image, label
        New contiguous arrays.
    """
    if settings.flips:
        if rng.random() < 0.5:
            image, label = image[:, :, ::-1], label[:, ::-1]
        if rng.random() < 0.5:
            image, label = image[:, ::-1, :], label[::-1, :]
    if settings.rot90 and image.shape[1] == image.shape[2]:
        turns = int(rng.integers(4))
        image, label = np.rot90(image, turns, axes=(1, 2)), np.rot90(label, turns)
    image = np.ascontiguousarray(image, dtype=np.float32)
    if settings.contrast > 0:
        image = image * np.float32(1.0 + rng.uniform(-settings.contrast, settings.contrast))
    if settings.brightness > 0:
        image = image + np.float32(rng.uniform(-settings.brightness, settings.brightness))
    if settings.noise > 0:
        image = image + rng.normal(0.0, settings.noise, image.shape).astype(np.float32)
    return image.astype(np.float32, copy=False), np.ascontiguousarray(label)
