"""The training loop: AdamW, a step-indexed schedule, validation and checkpoints every epoch.

Reproducible by construction: the patches and augmentations of step ``s`` come from a
generator seeded with ``(seed, s)``, and the learning rate is a function of ``s``, so a run
resumed from the checkpoint of epoch ``e`` draws exactly the batches the uninterrupted run
would have drawn and reproduces its losses.

The loop sees patches through :class:`PatchSource` (``draw(rng)`` and ``validation()``), so it
knows nothing about files; :mod:`pipeline.sample` provides one that reads windows of rasters.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from pipeline.errors import CheckpointError, ConfigError, OutputExistsError
from unet.model import UNet
from unet.train.augment import augment_patch
from unet.train.checkpoint import load_optimizer_state, save_optimizer_state, state_path
from unet.train.device import resolve_device, resolve_precision
from unet.train.losses import get_loss
from unet.train.metrics import Confusion
from unet.train.schedule import learning_rate
from unet.train.settings import TrainSettings

__all__ = ["PatchLike", "PatchSource", "TrainResult", "train"]


class PatchLike(Protocol):
    """A patch: ``image`` (bands, h, w) raw pixels and ``label`` (h, w) class ids."""

    @property
    def image(self) -> np.ndarray:
        """Raw pixels."""
        ...

    @property
    def label(self) -> np.ndarray:
        """Class ids, 255 = ignore."""
        ...


class PatchSource(Protocol):
    """Where patches come from: random training draws and fixed validation windows."""

    def draw(self, rng: np.random.Generator) -> PatchLike:
        """Return one training patch drawn with ``rng``."""
        ...

    def validation(self) -> Iterable[PatchLike]:
        """Yield the validation windows (the same ones every time)."""
        ...


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced.

    Attributes
    ----------
    last, best
        Checkpoint paths (``best`` by validation IoU, or by training loss without validation).
    best_score, best_epoch
        The best score (mean foreground IoU or minus the training loss) and its epoch.
    history
        One dict per epoch: loss, learning rate, validation loss/IoU/Dice, seconds.
    steps, seconds, precision, device
        Steps done in total, wall time of this call, autocast precision and device used.
    """

    last: Path
    best: Path
    best_score: float
    best_epoch: int
    history: tuple[dict[str, Any], ...]
    steps: int
    seconds: float
    precision: str
    device: str

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict."""
        return {
            "last": str(self.last),
            "best": str(self.best),
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "history": list(self.history),
            "steps": self.steps,
            "seconds": self.seconds,
            "precision": self.precision,
            "device": self.device,
        }


def train(
    model: UNet,
    data: PatchSource,
    out: str | Path,
    *,
    classes: list[str] | tuple[str, ...],
    mean: list[float] | tuple[float, ...] | None = None,
    std: list[float] | tuple[float, ...] | None = None,
    bands: list[int] | tuple[int, ...] | None = None,
    pixel_size: float | None = None,
    settings: TrainSettings | None = None,
    extra: dict[str, Any] | None = None,
    resume: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train ``model`` on patches from ``data``, writing checkpoints to ``out``.

    Parameters
    ----------
    model
        The U-Net to train (its weights are updated in place).
    data
        Training draws and validation windows (e.g. :class:`pipeline.sample.PatchSampler`).
    out
        Directory for ``last.safetensors``, ``best.safetensors`` (+ ``.state.safetensors``
        optimiser files) and ``history.json``.
    classes
        Output channel names, as :func:`unet.save` takes them.
    mean, std
        Per-band normalisation, applied as ``(raw - mean) / std`` and recorded in every
        checkpoint; taken from the checkpoint when resuming.
    bands, pixel_size
        Recorded in the checkpoint.
    settings
        Optimisation settings (defaults: :class:`TrainSettings`).
    extra
        JSON-able items to record in every checkpoint's ``extra`` (e.g. the data config).
    resume
        A ``last.safetensors`` (or any epoch checkpoint) of an earlier run with the same
        model: weights, optimiser, step and history continue from it.
    overwrite
        Allow starting a fresh run in a directory that already holds checkpoints.
    progress
        Show a progress bar (loss, validation IoU).
    on_epoch
        Called with each epoch's history entry.

    Returns
    -------
    TrainResult
        Checkpoint paths, history and timing.
    """
    settings = settings or TrainSettings()
    previous_threads = torch.get_num_threads()
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    try:
        run = _Run(model, data, Path(out), settings, classes, bands, pixel_size, extra)
        run.start(resume, overwrite, mean, std)
        run.fit(progress, on_epoch)
    finally:
        torch.set_num_threads(previous_threads)
    return run.result()


class _Run:
    """The state of one training run: model, optimiser, step, history, best score."""

    def __init__(
        self,
        model: UNet,
        data: PatchSource,
        out: Path,
        settings: TrainSettings,
        classes: list[str] | tuple[str, ...],
        bands: list[int] | tuple[int, ...] | None,
        pixel_size: float | None,
        extra: dict[str, Any] | None,
    ) -> None:
        self.started = time.perf_counter()
        self.model, self.data, self.out, self.settings = model, data, out, settings
        self.classes, self.bands, self.pixel_size = list(classes), bands, pixel_size
        self.extra = dict(extra or {})
        self.device = resolve_device(settings.device)
        self.precision = resolve_precision(settings.precision, self.device)
        model.to(self.device)
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
        )
        self.loss_fn = get_loss(settings.loss, settings.class_weights)
        self.last_path, self.best_path = out / "last.safetensors", out / "best.safetensors"
        self.history: list[dict[str, Any]] = []
        self.step, self.best_score, self.best_epoch = 0, -math.inf, 0
        self.mean = np.zeros((0, 1, 1), dtype=np.float32)
        self.std = np.ones((0, 1, 1), dtype=np.float32)

    def start(
        self,
        resume: str | Path | None,
        overwrite: bool,
        mean: list[float] | tuple[float, ...] | None,
        std: list[float] | tuple[float, ...] | None,
    ) -> None:
        """Load a resumed run's state, or check the output directory for a fresh one."""
        import unet

        if resume is not None:
            metadata = unet.read_metadata(resume)
            state = metadata.extra.get("train")
            if not isinstance(state, dict):
                raise CheckpointError(
                    f"{resume} was not written by unet.train; cannot resume from it"
                )
            _load_weights(self.model, resume, self.device)
            load_optimizer_state(self.optimizer, state_path(resume))
            self.step = int(state["step"])
            self.history = list(state.get("history", []))
            self.best_score = float(state.get("best_score", -math.inf))
            self.best_epoch = int(state.get("best_epoch", 0))
            mean, std = metadata.mean, metadata.std
            self.out.mkdir(parents=True, exist_ok=True)
            earlier_best = Path(resume).with_name("best.safetensors")
            if not self.best_path.exists():
                if earlier_best.exists():  # resuming into a new folder: bring the best along
                    shutil.copyfile(earlier_best, self.best_path)
                else:  # no best to compare with: the next epoch writes one
                    self.best_score = -math.inf
        elif self.last_path.exists() and not overwrite:
            raise OutputExistsError(
                f"{self.out} already holds a training run (last.safetensors); pass resume= to "
                "continue it or overwrite=True to start again"
            )
        if mean is None or std is None:
            raise ConfigError("train() needs mean and std (per band) unless it resumes a run")
        self.out.mkdir(parents=True, exist_ok=True)
        self.mean = np.asarray(mean, dtype=np.float32)[:, None, None]
        self.std = np.asarray(std, dtype=np.float32)[:, None, None]

    def fit(self, progress: bool, on_epoch: Callable[[dict[str, Any]], None] | None) -> None:
        """Run the remaining epochs, validating and checkpointing after each."""
        from tqdm.auto import tqdm

        total = self.settings.total_steps
        bar = tqdm(total=total, initial=self.step, desc="train", unit="step", disable=not progress)
        try:
            while self.step < total:
                entry = self.epoch(bar)
                postfix = {"loss": f"{entry['loss']:.4f}"}
                if "val_score" in entry:
                    postfix["val_iou"] = f"{entry['val_score']:.3f}"
                bar.set_postfix(postfix)
                if on_epoch is not None:
                    on_epoch(entry)
        finally:
            bar.close()

    def epoch(self, bar: Any) -> dict[str, Any]:
        """Train one epoch, validate, write checkpoints; return the history entry."""
        settings = self.settings
        epoch = self.step // settings.steps_per_epoch + 1
        epoch_start = time.perf_counter()
        losses: list[float] = []
        lr = settings.lr
        self.model.train()
        for _ in range(settings.steps_per_epoch):
            if self.step >= settings.total_steps:
                break
            lr = learning_rate(
                self.step, settings.total_steps, settings.lr, settings.schedule, settings.warmup
            )
            losses.append(self.train_step(lr))
            self.step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", refresh=False)
        entry: dict[str, Any] = {
            "epoch": epoch,
            "step": self.step,
            "loss": float(np.mean(losses)),
            "lr": lr,
        }
        entry.update(
            _validate(
                self.model,
                self.data,
                settings,
                self.device,
                self.precision,
                self.mean,
                self.std,
                self.loss_fn,
            )
        )
        score = entry.get("val_score", -entry["loss"])
        entry["seconds"] = round(time.perf_counter() - epoch_start, 3)
        self.history.append(entry)
        if score > self.best_score:
            self.best_score, self.best_epoch = float(score), epoch
            self.checkpoint(self.best_path, epoch)
        self.checkpoint(self.last_path, epoch)
        if settings.keep_epochs:
            self.checkpoint(self.out / f"epoch-{epoch:03d}.safetensors", epoch)
        _write_history(self.out / "history.json", self.history)
        return entry

    def train_step(self, lr: float) -> float:
        """Do one optimiser step at learning rate ``lr``; return the loss."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        images, labels = _batch(
            self.model, self.data, self.settings, self.step, self.mean, self.std
        )
        images, labels = images.to(self.device), labels.to(self.device)
        with _autocast(self.device, self.precision):
            output = self.model(images)
        loss = _supervised_loss(output, labels, self.loss_fn, self.settings.aux_weight)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        self.optimizer.step()
        return float(loss.detach())

    def checkpoint(self, path: Path, epoch: int) -> None:
        """Write the model (with the run's state in its header) and the optimiser state."""
        import unet

        record = {
            "step": self.step,
            "epoch": epoch,
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "history": self.history,
            "settings": self.settings.to_dict(),
            "precision": self.precision,
        }
        unet.save(
            self.model,
            path,
            classes=self.classes,
            bands=None if self.bands is None else list(self.bands),
            mean=[float(v) for v in np.ravel(self.mean)],
            std=[float(v) for v in np.ravel(self.std)],
            pixel_size=self.pixel_size,
            extra={**self.extra, "train": record},
        )
        save_optimizer_state(self.optimizer, state_path(path))

    def result(self) -> TrainResult:
        """Summarise the run."""
        return TrainResult(
            last=self.last_path,
            best=self.best_path,
            best_score=self.best_score,
            best_epoch=self.best_epoch,
            history=tuple(self.history),
            steps=self.step,
            seconds=time.perf_counter() - self.started,
            precision=self.precision,
            device=str(self.device),
        )


def _load_weights(model: UNet, path: str | Path, device: torch.device) -> None:
    from safetensors.torch import load_file

    try:
        model.load_state_dict(load_file(str(path), device=str(device)), strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path} does not fit this model (different architecture); resume with the "
            "model the checkpoint describes"
        ) from exc


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _crop(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Centre-crop labels to a valid-padding model's output size."""
    top = (label.shape[0] - size[0]) // 2
    left = (label.shape[1] - size[1]) // 2
    return label[top : top + size[0], left : left + size[1]]


def _output_shape(model: UNet, shape: tuple[int, int]) -> tuple[int, int]:
    try:
        return model.output_size(shape[0]), model.output_size(shape[1])
    except ValueError as exc:
        raise ConfigError(f"patch size {shape} does not fit the model: {exc}") from exc


def _batch(
    model: UNet,
    data: PatchSource,
    settings: TrainSettings,
    step: int,
    mean: np.ndarray,
    std: np.ndarray,
) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng([settings.seed, step])
    images, labels = [], []
    for _ in range(settings.batch):
        patch = data.draw(rng)
        image = (patch.image - mean) / std
        label = _crop(patch.label, _output_shape(model, patch.label.shape))
        image, label = augment_patch(image, label, settings.augment, rng)
        images.append(image)
        labels.append(label)
    return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(labels))


def _supervised_loss(
    output: torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]],
    labels: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    aux_weight: float,
) -> torch.Tensor:
    """Return the main loss plus deep-supervision losses weighted ``aux_weight ** level``."""
    if isinstance(output, tuple):
        logits, aux = output
        total = loss_fn(logits.float(), labels)
        norm = 1.0
        for level, extra in enumerate(aux, start=1):
            weight = aux_weight**level
            total = total + weight * loss_fn(extra.float(), labels)
            norm += weight
        return total / norm
    return loss_fn(output.float(), labels)


def _groups(patches: Iterable[PatchLike], size: int) -> Iterator[list[PatchLike]]:
    """Group consecutive same-shaped patches into batches of at most ``size``."""
    group: list[PatchLike] = []
    for patch in patches:
        if group and (len(group) == size or group[0].image.shape != patch.image.shape):
            yield group
            group = []
        group.append(patch)
    if group:
        yield group


def _validate(
    model: UNet,
    data: PatchSource,
    settings: TrainSettings,
    device: torch.device,
    precision: str,
    mean: np.ndarray,
    std: np.ndarray,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> dict[str, Any]:
    channels = model.architecture.classes
    confusion = Confusion(channels + 1 if channels == 1 else channels)
    losses, weights = [], []
    model.eval()
    try:
        with torch.inference_mode():
            for group in _groups(data.validation(), settings.batch):
                images = torch.from_numpy(
                    np.stack([(p.image - mean) / std for p in group]).astype(np.float32)
                ).to(device)
                shape = _output_shape(model, group[0].label.shape)
                labels = torch.from_numpy(np.stack([_crop(p.label, shape) for p in group])).to(
                    device
                )
                scored = int((labels != 255).sum())
                if scored == 0:
                    continue
                with _autocast(device, precision):
                    logits = model(images)
                logits = logits.float()
                losses.append(float(loss_fn(logits, labels)))
                weights.append(scored)
                if channels == 1:
                    predicted = (torch.sigmoid(logits[:, 0]) >= settings.threshold).to(torch.uint8)
                else:
                    predicted = logits.argmax(1).to(torch.uint8)
                confusion.update(predicted, labels)
    finally:
        model.train()
    if not weights:
        return {}
    iou = confusion.iou()
    finite = [v for v in iou if not math.isnan(v)]
    result: dict[str, Any] = {
        "val_loss": float(np.average(losses, weights=weights)),
        "val_iou": iou,
        "val_dice": confusion.dice(),
        "val_pixels": int(sum(weights)),
    }
    if finite:
        result["val_score"] = float(np.mean(finite))
    return result


def _write_history(path: Path, history: list[dict[str, Any]]) -> None:
    import json

    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(history, indent=1, allow_nan=True) + "\n", encoding="utf-8")
    tmp.replace(path)
