"""A synthetic segmentation task: noisy images with bright disks (in memory, no files)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Patch:
    image: np.ndarray
    label: np.ndarray


class Disks:
    """Draws ``size``-pixel patches with 1-3 disks; ``classes=2`` adds squares as class 2."""

    def __init__(self, size: int = 32, n_val: int = 4, classes: int = 1, bands: int = 1):
        self.size, self.n_val, self.classes, self.bands = size, n_val, classes, bands

    def make(self, rng: np.random.Generator) -> Patch:
        s = self.size
        yy, xx = np.mgrid[:s, :s]
        label = np.zeros((s, s), np.uint8)
        image = rng.normal(100, 8, (self.bands, s, s)).astype(np.float32)
        for _ in range(int(rng.integers(1, 4))):
            r = rng.uniform(3, 7)
            cy, cx = rng.uniform(0, s, 2)
            cls = int(rng.integers(1, self.classes + 1))
            if cls == 1:
                mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
            else:
                mask = (abs(yy - cy) < r) & (abs(xx - cx) < r)
            label[mask] = cls
            image[:, mask] += 30.0 * cls
        return Patch(image, label)

    def draw(self, rng: np.random.Generator) -> Patch:
        return self.make(rng)

    def validation(self):
        rng = np.random.default_rng(999)
        for _ in range(self.n_val):
            yield self.make(rng)
