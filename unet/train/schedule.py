"""Learning-rate schedules as pure functions of the step, so a resumed run needs only the step."""

from __future__ import annotations

import math

__all__ = ["learning_rate"]


def learning_rate(step: int, total: int, peak: float, kind: str, warmup: float = 0.1) -> float:
    """Return the learning rate for ``step`` (0-based) of ``total``.

    Parameters
    ----------
    step, total
        Current step and number of steps.
    peak
        The largest learning rate.
    kind
        ``onecycle``: linear warm-up from ``peak / 25`` over ``warmup * total`` steps, then
        cosine decay to ``peak * 1e-3``; ``cosine``: cosine decay from ``peak``; ``constant``.
    warmup
        Fraction of steps for warm-up (``onecycle``).

    Returns
    -------
    float
        The learning rate.

    Examples
    --------
    >>> learning_rate(0, 100, 1.0, "constant")
    1.0
    >>> round(learning_rate(99, 100, 1.0, "cosine"), 4)
    0.001
    """
    if kind == "constant" or total <= 1:
        return peak
    floor = peak * 1e-3
    if kind == "onecycle":
        ramp = int(warmup * total)
        if step < ramp:
            start = peak / 25
            return start + (peak - start) * step / ramp
        progress = (step - ramp) / max(1, total - 1 - ramp)
    else:
        progress = step / (total - 1)
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * min(1.0, progress)))
