"""Measure a model's receptive field by perturbation (for cards that say ``halo: measure``).

A network file (ONNX, TorchScript) need not reveal its architecture, but its receptive field
can be observed: change one input pixel and see how far the output changes. The probe runs
on a deterministic random input (so ReLUs are not all off), perturbs the centre pixel both
ways, and takes the largest Chebyshev distance of a changed output pixel as the radius. The
halo is that radius rounded up to the model's alignment, like the halo of a gigaseg U-Net.
A probe that reaches the border of its input is repeated on inputs twice as large (dynamic
models), up to a limit beyond which the model is refused as having no local receptive field
(instance normalisation, attention), or reported as a lower bound (fixed-size models).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pipeline.errors import ConfigError

__all__ = ["HaloMeasurement", "measure_halo"]

_LOG = logging.getLogger("gigaseg")


@dataclass(frozen=True)
class HaloMeasurement:
    """The result of a probe: observed radius, the halo used and whether it is a lower bound."""

    radius: int
    halo: int
    probe_size: int
    lower_bound: bool

    def describe(self, model: str) -> str:
        """One line saying what was measured and chosen."""
        bound = " (at least: the probe reached its border)" if self.lower_bound else ""
        return (
            f"model {model}: halo measured by perturbation: receptive-field radius "
            f"{self.radius}px{bound} on a {self.probe_size}px probe, rounded up to "
            f"halo {self.halo}"
        )


def _radius(
    forward: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]],
    channels: int,
    size: int,
    alignment: int,
) -> int:
    rng = np.random.default_rng(0)
    radius = 0
    # the reach of a pooled network depends on the pixel's phase modulo the alignment:
    # probe every phase, each on its own random input, with large changes both ways (so
    # the pixel wins the max-pools along some path)
    for phase in range(alignment):
        centre = size // 2 - size // 2 % alignment + phase
        base = rng.standard_normal((1, channels, size, size)).astype(np.float32)
        ref = forward(base)
        changed = np.zeros(ref.shape[-2:], bool)
        for sign in (1.0, -1.0):
            probe = base.copy()
            probe[0, :, centre, centre] += np.float32(1e3 * sign) * rng.choice([-1, 1], channels)
            # any change at all counts: outside the receptive field the arithmetic is
            # identical, so a change there only makes the estimate safer
            changed |= (forward(probe) != ref).any(axis=(0, 1))
        rows, cols = np.nonzero(changed)
        if len(rows):
            off = (size - int(ref.shape[-2])) // 2  # valid models: output shrinks symmetrically
            reach = max(np.abs(rows + off - centre).max(), np.abs(cols + off - centre).max())
            radius = max(radius, int(reach))
        if _reaches_border(radius, size):
            break  # a larger probe is needed anyway: the other phases cannot tell more
    return radius


def _reaches_border(radius: int, size: int) -> bool:
    return radius >= size // 2 - 1


def measure_halo(
    forward: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]],
    *,
    channels: int,
    alignment: int,
    fixed_size: int | None = None,
    start: int = 128,
    limit: int = 2048,
    model: str = "model",
) -> HaloMeasurement:
    """Probe ``forward`` (normalised ``(1, C, S, S)`` -> ``(1, K, S', S')``) for its halo.

    Parameters
    ----------
    forward
        The network on normalised input (e.g. :meth:`Predictor.logits`).
    channels
        Input channels.
    alignment
        The halo is rounded up to a multiple of it; probe sizes are multiples of it.
    fixed_size
        The only size the model accepts, if any.
    start, limit
        First and largest probe size for models of any size.
    model
        Name for the log line.

    Returns
    -------
    HaloMeasurement
        Radius, halo, probe size and whether the probe was too small to see it all.

    Raises
    ------
    ConfigError
        A model of any size whose output still changes at the border of the largest probe
        (``limit``): it has no local receptive field, so no halo is exact.
    """
    sizes = [fixed_size] if fixed_size else []
    size = -(-max(start, 4 * alignment) // alignment) * alignment
    while not fixed_size and size <= limit:  # doubling probes until one holds the field
        sizes.append(size)
        size *= 2
    radius, probe, bounded = 0, sizes[0], True
    for probe in sizes:
        radius = _radius(forward, channels, probe, alignment)
        bounded = _reaches_border(radius, probe)
        if not bounded:
            break
    if bounded and not fixed_size:
        raise ConfigError(
            f"model {model}: halo: measure found no edge to its receptive field: one changed "
            f"input pixel changes the output up to the border of every probe up to {probe}px "
            "(instance/global normalisation or attention makes every output depend on the "
            "whole input), so no halo makes tiles equal the whole image; give halo: N in its "
            "model card (or --halo N) to run it with that much context"
        )
    halo = -(-radius // alignment) * alignment
    result = HaloMeasurement(radius, halo, probe, bounded)
    _LOG.warning("%s", result.describe(model))
    return result
