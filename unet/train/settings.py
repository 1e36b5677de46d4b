"""Training settings: one frozen object, built and checked by :func:`parse_train_settings`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from pipeline.errors import ConfigError, short_repr

__all__ = ["LOSSES", "PRECISIONS", "SCHEDULES", "Augment", "TrainSettings", "parse_train_settings"]

#: Loss names. ``bce``/``ce`` are the same choice: binary for one output channel, multi-class
#: cross-entropy otherwise.
LOSSES = ("bce+dice", "dice", "focal", "bce", "ce", "ce+dice")
SCHEDULES = ("onecycle", "cosine", "constant")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class Augment:
    """Augmentations; geometric ones are applied to the labels too.

    Attributes
    ----------
    flips
        Random horizontal and vertical flips.
    rot90
        Random multiples of 90 degree rotations (square patches).
    brightness, contrast
        Maximum shift (in standard deviations) and relative scale change of the normalised
        pixels; 0 turns them off.
    noise
        Standard deviation of added Gaussian noise, in standard deviations.
    """

    flips: bool = True
    rot90: bool = True
    brightness: float = 0.1
    contrast: float = 0.1
    noise: float = 0.02


@dataclass(frozen=True)
class TrainSettings:
    """How to train: optimisation, schedule, loss, precision and checkpoints.

    Attributes
    ----------
    epochs, steps_per_epoch
        Training length; validation and a checkpoint follow every epoch.
    batch
        Patches per step.
    lr, weight_decay
        AdamW peak learning rate and decoupled weight decay.
    schedule
        ``onecycle`` (linear warm-up then cosine decay to ``lr * 1e-3``), ``cosine`` (cosine
        decay from the first step) or ``constant``.
    warmup
        Fraction of all steps used for warm-up (``onecycle`` only).
    loss
        One of :data:`LOSSES`.
    class_weights
        Cross-entropy weight per output channel (``None``: all 1), e.g. ``[1, 1, 3]`` to
        weight the thin boundary class of an interior / boundary / background model.
    aux_weight
        Weight of each deep-supervision output relative to the main one (halved per level).
    precision
        ``auto`` (bf16 on CPUs with AMX/AVX-512-BF16 and on bf16 GPUs, else fp32), ``fp32`` or
        ``bf16``.
    device
        ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
    seed
        Seeds patch draws, augmentation and (through the caller) weight initialisation.
    threshold
        Probability at which a pixel counts as foreground in validation metrics.
    threads
        CPU threads for torch during training (``None`` keeps torch's default). On a shared
        machine, 1 thread per training process avoids oversubscription, which can cost 10x.
    keep_epochs
        Also keep ``epoch-NNN.safetensors`` for every epoch (``last`` and ``best`` always).
    augment
        Augmentation settings.
    """

    epochs: int = 20
    steps_per_epoch: int = 50
    batch: int = 8
    lr: float = 3e-3
    weight_decay: float = 1e-4
    schedule: str = "onecycle"
    warmup: float = 0.1
    loss: str = "bce+dice"
    class_weights: tuple[float, ...] | None = None
    aux_weight: float = 0.5
    precision: str = "auto"
    device: str = "auto"
    seed: int = 0
    threshold: float = 0.5
    threads: int | None = None
    keep_epochs: bool = False
    augment: Augment = field(default_factory=Augment)

    def __post_init__(self) -> None:
        for name in ("epochs", "steps_per_epoch", "batch"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"train.{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be positive, got {self.lr}")
        for name, value, choices in (
            ("loss", self.loss, LOSSES),
            ("schedule", self.schedule, SCHEDULES),
            ("precision", self.precision, PRECISIONS),
            ("device", self.device, ("auto", "cpu", "cuda")),
        ):
            if value not in choices:
                raise ConfigError(
                    f"train.{name}={short_repr(value)} is not one of "
                    f"{', '.join(map(repr, choices))}"
                )
        if self.class_weights is not None and (
            not self.class_weights or min(self.class_weights) < 0
        ):
            raise ConfigError(
                f"train.class_weights must be non-negative numbers, got {self.class_weights}"
            )
        if not 0.0 <= self.warmup < 1.0:
            raise ConfigError(f"train.warmup must be in [0, 1), got {self.warmup}")

    @property
    def total_steps(self) -> int:
        """Number of optimiser steps of the whole run."""
        return self.epochs * self.steps_per_epoch

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict (what the checkpoint records)."""
        return asdict(self)


def _coerce_weights(data: dict[str, Any]) -> None:
    """Turn a YAML list of class weights into a tuple of floats, in place."""
    if data.get("class_weights") is not None:
        data["class_weights"] = tuple(float(v) for v in data["class_weights"])


def parse_train_settings(data: dict[str, Any] | None) -> TrainSettings:
    """Build :class:`TrainSettings` from a mapping (a YAML ``train:`` section).

    Parameters
    ----------
    data
        Keys named like the attributes; ``augment`` is a nested mapping (or ``false`` to turn
        every augmentation off).

    Returns
    -------
    TrainSettings
        The checked settings.

    Raises
    ------
    ConfigError
        On an unknown key or a bad value, naming it.
    """
    data = dict(data or {})
    known = {f.name for f in fields(TrainSettings)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown train keys {unknown}; valid keys: {sorted(known)}")
    augment = data.pop("augment", None)
    if augment is False:
        data["augment"] = Augment(False, False, 0.0, 0.0, 0.0)
    elif isinstance(augment, dict):
        valid = {f.name for f in fields(Augment)}
        bad = sorted(set(augment) - valid)
        if bad:
            raise ConfigError(f"unknown train.augment keys {bad}; valid keys: {sorted(valid)}")
        data["augment"] = Augment(**augment)
    elif augment is not None and not isinstance(augment, Augment):
        raise ConfigError(f"train.augment must be a mapping or false, got {short_repr(augment)}")
    elif isinstance(augment, Augment):
        data["augment"] = augment
    try:
        if data.get("threads") is not None:
            data["threads"] = int(data["threads"])
        for name in ("epochs", "steps_per_epoch", "batch", "seed"):
            if name in data:
                data[name] = int(data[name])
        for name in ("lr", "weight_decay", "warmup", "aux_weight", "threshold"):
            if name in data:
                data[name] = float(data[name])
        _coerce_weights(data)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad number in train settings: {exc}") from exc
    return TrainSettings(**data)
