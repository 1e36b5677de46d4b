"""``gigaseg train``: train a U-Net from large images and vector/raster labels.

The config file (YAML) has four sections; relative paths are resolved against its folder::

    data:      images, labels, classes, bands, patch, holdout, foreground...  (pipeline.sample)
    model:     UNet arguments, or ``architecture: NAME`` from unet.ARCHITECTURES + overrides
    train:     epochs, steps_per_epoch, batch, lr, loss, precision, seed...   (unet.train)
    out:       checkpoint directory;  export: copy of the best checkpoint;  metrics: JSON path
    evaluate:  whole-image scores after training (small images only): min_area, iou_threshold

Flags override the file, and ``--image``/``--labels`` train without one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path, PurePosixPath
from typing import Any

__all__ = [
    "HELP",
    "add_arguments",
    "instance_scheme",
    "load_config",
    "main",
    "output_names",
    "run_training",
]

HELP = "train a U-Net on windows of large images with vector or raster labels"

#: Largest image (pixels) scored whole after training; larger ones: predict + evaluate.
_MAX_EVAL_PIXELS = 25_000_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``train`` options."""
    parser.add_argument("config", nargs="?", default=None, help="training config (YAML)")
    parser.add_argument("--image", action="append", default=None, help="image (repeatable)")
    parser.add_argument("--labels", action="append", default=None, help="labels per image")
    parser.add_argument("--classes", default=None, help="class names, comma separated")
    parser.add_argument("--bands", default=None, help="1-based bands, e.g. 1,2,3")
    parser.add_argument("--patch", type=int, default=None, help="training window size")
    parser.add_argument("--holdout", default=None, help="validation band, e.g. cols:0.8-1.0")
    parser.add_argument("--architecture", default=None, help="named U-Net (unet.ARCHITECTURES)")
    parser.add_argument("--base", type=int, default=None, help="U-Net width of the first level")
    parser.add_argument("--depth", type=int, default=None, help="U-Net pooling steps")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--steps-per-epoch", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--loss", default=None, help="bce+dice, dice, focal, bce/ce")
    parser.add_argument("--precision", default=None, choices=["auto", "fp32", "bf16"])
    parser.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"])
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", default=None, help="checkpoint directory")
    parser.add_argument("--export", default=None, help="copy the best checkpoint here")
    parser.add_argument("--metrics", default=None, help="write final metrics JSON here")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--resume", default=None, help="continue from a last.safetensors")
    mode.add_argument("--overwrite", action="store_true", help="restart in a used directory")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def load_config(path: str | Path | None) -> tuple[dict[str, Any], Path]:
    """Read a YAML training config; return it and the folder relative paths start from."""
    from pipeline.errors import ConfigError
    from workflows.yamlfile import load_yaml

    if path is None:
        return {}, Path.cwd()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"training config {path} does not exist")
    config = load_yaml(path.read_text(encoding="utf-8"), source=f"training config {path}") or {}
    if not isinstance(config, dict):
        raise ConfigError(f"training config {path} must be a mapping of sections")
    unknown = sorted(
        set(config) - {"data", "model", "train", "out", "export", "metrics", "evaluate"}
    )
    if unknown:
        raise ConfigError(
            f"unknown sections {unknown} in {path}; valid: data, model, train, out, export, "
            "metrics, evaluate"
        )
    return config, path.parent


def _apply_flags(config: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    data = dict(config.get("data") or {})
    train = dict(config.get("train") or {})
    _apply_data_flags(data, args)
    for key in ("epochs", "steps_per_epoch", "batch", "lr", "loss", "precision", "device"):
        if getattr(args, key) is not None:
            train[key] = getattr(args, key)
    for key in ("seed", "threads"):
        if getattr(args, key) is not None:
            train[key] = getattr(args, key)
    model = dict(config.get("model") or {})
    for key in ("architecture", "base", "depth"):
        if getattr(args, key) is not None:
            model[key] = getattr(args, key)
    out = {**config, "data": data, "train": train, "model": model}
    for key in ("out", "export", "metrics"):
        if getattr(args, key) is not None:
            out[key] = str(Path(getattr(args, key)).resolve())
    return out


def _apply_data_flags(data: dict[str, Any], args: argparse.Namespace) -> None:
    from pipeline.read.location import is_remote

    if args.image:
        data["images"] = [p if is_remote(p) else str(Path(p).resolve()) for p in args.image]
    if args.labels:
        data["labels"] = [p if is_remote(p) else str(Path(p).resolve()) for p in args.labels]
    if args.classes:
        data["classes"] = [c.strip() for c in args.classes.split(",") if c.strip()]
    if args.bands:
        data["bands"] = [int(b) for b in args.bands.split(",")]
    for key in ("patch", "holdout"):
        if getattr(args, key) is not None:
            data[key] = getattr(args, key)


def _resolve(path: str | None, base: Path) -> Path | None:
    if path is None:
        return None
    candidate = Path(path)
    return candidate if candidate.is_absolute() else base / candidate


def _build_model(section: dict[str, Any], in_channels: int, outputs: int) -> Any:
    import unet
    from pipeline.errors import ConfigError

    section = dict(section or {})
    name = section.pop("architecture", None)
    try:
        if name is not None:
            return unet.build(str(name), in_channels=in_channels, classes=outputs, **section)
        return unet.UNet(in_channels=in_channels, classes=outputs, **section)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad model section: {exc}") from exc


def output_names(classes: tuple[str, ...], boundary: float | None) -> list[str]:
    """Return the model's output channel names for the data's classes.

    One class and no boundary: a one-channel sigmoid model. Otherwise a softmax model with
    background first; with a boundary width, the ``boundary`` channel last.
    """
    from pipeline.sample import boundary_classes

    if boundary is not None:
        return boundary_classes(classes)
    if len(classes) == 1:
        return list(classes)
    return ["background", *classes]


def instance_scheme(width: float, slide: bool) -> dict[str, Any]:
    """Return the checkpoint record of a boundary-trained model, read by ``vectorize``.

    Parameters
    ----------
    width
        The boundary width the targets were made with.
    slide
        Whether the width is in microns (slides) rather than metres.

    Returns
    -------
    dict
        ``{"method": "boundary", "boundary_width": width, "units": "um" | "m"}``.
    """
    return {"method": "boundary", "boundary_width": width, "units": "um" if slide else "m"}


def run_training(
    config: dict[str, Any],
    base: Path,
    *,
    resume: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """Train as a config says; return a summary (paths, time, history, final metrics).

    Parameters
    ----------
    config
        The parsed config (sections ``data``, ``model``, ``train``, ``out``...).
    base
        Folder relative paths in the config are resolved against.
    resume
        A ``last.safetensors`` to continue from.
    overwrite
        Start again in an output directory that holds a run.
    progress
        Show the progress bar.
    command
        The command line, recorded in the metrics file.

    Returns
    -------
    dict
        JSON-able summary; also written to ``metrics`` when the config names it.
    """
    import torch

    from pipeline.sample import parse_sample_settings
    from unet.train import parse_train_settings

    data = parse_sample_settings(config.get("data") or {}, base)
    settings = parse_train_settings(config.get("train"))
    threads = torch.get_num_threads()
    if settings.threads is not None:  # for the statistics and final evaluation too
        torch.set_num_threads(settings.threads)
    try:
        return _run(config, base, data, settings, resume, overwrite, progress, command)
    finally:
        torch.set_num_threads(threads)


def _run(
    config: dict[str, Any],
    base: Path,
    data: Any,
    settings: Any,
    resume: str | Path | None,
    overwrite: bool,
    progress: bool,
    command: str | None,
) -> dict[str, Any]:
    import numpy as np
    import torch

    import unet
    from pipeline.errors import ConfigError
    from pipeline.sample import PatchSampler, open_scene
    from unet.train import train

    out = _resolve(config.get("out"), base)
    if out is None:
        raise ConfigError("no output directory: set 'out:' in the config or pass --out")
    scenes = []
    try:
        for image, labels in zip(data.images, data.labels, strict=True):
            scenes.append(
                open_scene(
                    image,
                    labels,
                    classes=data.classes,
                    bands=data.bands,
                    level=data.level,
                    label_property=data.label_property,
                    line_width=data.line_width,
                    boundary=data.boundary,
                )
            )
        bands = scenes[0].image.bands
        names = output_names(data.classes, data.boundary)
        outputs = len(names)
        torch.manual_seed(settings.seed)
        if resume is not None:
            model, _ = unet.load(resume)
            model.train()
        else:
            model = _build_model(config.get("model") or {}, len(bands), outputs)
        sampler = PatchSampler(
            scenes,
            patch=data.patch,
            holdout=data.holdout,
            foreground=data.foreground,
            max_nodata=data.max_nodata,
            val_multiple=model.alignment if model.padding == "same" else 1,
        )
        if model.padding == "valid" and model.valid_input_size(data.patch) != data.patch:
            raise ConfigError(
                f"patch {data.patch} does not fit the valid-padding model; use "
                f"{model.valid_input_size(data.patch)}"
            )
        mean, std = sampler.statistics(
            np.random.default_rng([settings.seed, 2**31]), data.statistics_samples
        )
        georef = scenes[0].image.georef
        pixel_size = float(georef.resolution[0]) if georef.kind == "geo" else None
        extra: dict[str, Any] = {"data": data.to_dict(), "command": command}
        if data.boundary is not None:  # vectorize picks its instance method from this
            extra["instances"] = instance_scheme(data.boundary, georef.kind == "slide")
        result = train(
            model,
            sampler,
            out,
            classes=names,
            mean=mean,
            std=std,
            bands=bands,
            pixel_size=pixel_size,
            settings=settings,
            extra=extra,
            resume=resume,
            overwrite=overwrite,
            progress=progress,
        )
        summary: dict[str, Any] = {
            "command": command,
            "train": result.to_dict(),
            "settings": settings.to_dict(),
            "data": data.to_dict(),
            "model": model.architecture.to_dict(),
            "parameters": int(sum(p.numel() for p in model.parameters())),
        }
        best_model, metadata = unet.load(result.best)
        summary["evaluation"] = _evaluate_scenes(
            best_model, metadata, scenes, data.holdout, config.get("evaluate") or {}
        )
    finally:
        for scene in scenes:
            for item in (scene.image, scene.labels):
                close = getattr(item, "close", None)
                if close is not None:
                    close()
    export = _resolve(config.get("export"), base)
    if export is not None:
        _copy(result.best, export)
        summary["export"] = str(export)
    metrics = _resolve(config.get("metrics"), base)
    if metrics is not None:
        tmp = metrics.with_name(f".{metrics.name}.tmp")
        tmp.write_text(json.dumps(_finite(summary), indent=2) + "\n", encoding="utf-8")
        tmp.replace(metrics)
        summary["metrics"] = str(metrics)
    return summary


def _finite(value: Any) -> Any:
    """Replace NaN by None so the metrics file is strict JSON."""
    if isinstance(value, float) and value != value:  # noqa: PLR0124 - NaN test
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _copy(source: Path, target: Path) -> None:
    import shutil

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.copyfile(source, tmp)
    tmp.replace(target)


def predict_whole(model: Any, metadata: Any, pixels: Any) -> Any:
    """Return foreground probabilities of a small image predicted in one piece.

    The image is reflect-padded by the model's halo (plus up to the alignment) and the
    padding cropped off, the reference the tiled pipeline is tested against.
    """
    import numpy as np
    import torch

    mean = np.asarray(metadata.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(metadata.std, dtype=np.float32)[:, None, None]
    image = (pixels - mean) / std
    _, height, width = image.shape
    halo = model.halo
    padded_h = model.valid_input_size(height + 2 * halo)
    padded_w = model.valid_input_size(width + 2 * halo)
    pad_h, pad_w = padded_h - height - 2 * halo, padded_w - width - 2 * halo
    padded = np.pad(image, ((0, 0), (halo, halo + pad_h), (halo, halo + pad_w)), mode="reflect")
    with torch.inference_mode():
        logits = model(torch.from_numpy(np.ascontiguousarray(padded))[None]).float()
    if model.padding == "valid":  # the output starts ``halo`` pixels into the padded input
        logits = logits[..., :height, :width]
    else:
        logits = logits[..., halo : halo + height, halo : halo + width]
    if logits.shape[1] == 1:
        return torch.sigmoid(logits[0, 0]).numpy()
    return torch.softmax(logits[0], dim=0).numpy()


def _evaluate_scenes(
    model: Any, metadata: Any, scenes: list[Any], holdout: Any, options: dict[str, Any]
) -> dict[str, Any]:
    """Score the best model on every (small) scene: whole image and hold-out band."""
    import numpy as np
    import shapely

    from pipeline.evaluate import mask_to_polygons, match_objects, pixel_metrics
    from pipeline.sample import IGNORE

    min_area = float(options.get("min_area", 0.0))
    iou_threshold = float(options.get("iou_threshold", 0.5))
    threshold = float(options.get("threshold", 0.5))
    results: dict[str, Any] = {}
    for scene in scenes:
        image = scene.image
        name = PurePosixPath(str(image.path)).name
        if image.height * image.width > _MAX_EVAL_PIXELS:
            results[name] = {"skipped": "image too large to score whole; use predict + evaluate"}
            continue
        pixels, valid = image.read(0, 0, image.height, image.width)
        predicted, labels, classes, names, scheme = _predicted(model, metadata, pixels, threshold)
        truth = scene.labels.window(0, 0, image.height, image.width)
        truth = np.where(valid, truth, IGNORE)
        if isinstance(scheme, dict):
            truth = np.where(truth == IGNORE, IGNORE, truth > 0).astype(np.uint8)
        regions = {"whole": (slice(None), slice(None))}
        band = None
        if holdout is not None:
            first, last = holdout.pixels(image.height, image.width)
            band = (first, last)
            cut = slice(first, last)
            regions["holdout"] = (
                (cut, slice(None)) if holdout.axis == "rows" else (slice(None), cut)
            )
        geometries = getattr(scene.labels, "geometries", None)
        if isinstance(scheme, dict):
            polygons = _boundary_instances(labels, len(metadata.classes), image.georef.transform)
        else:
            polygons = mask_to_polygons(predicted == 1, image.georef.transform)
        if min_area > 0 and len(polygons):
            polygons = polygons[shapely.area(polygons) >= min_area]
        scene_result: dict[str, Any] = {}
        for region, index in regions.items():
            entry: dict[str, Any] = {
                "pixels": pixel_metrics(
                    predicted[index], truth[index], classes=classes, names=names
                )
            }
            if geometries is not None and classes == 1:
                pred_in = (
                    _in_band(polygons, image, holdout, band) if region != "whole" else polygons
                )
                true_in = (
                    _in_band(geometries, image, holdout, band) if region != "whole" else geometries
                )
                entry["objects"] = match_objects(
                    pred_in, true_in, iou_threshold=iou_threshold
                ).to_dict()
            scene_result[region] = entry
        results[name] = scene_result
    return results


def _predicted(model: Any, metadata: Any, pixels: Any, threshold: float) -> tuple[Any, ...]:
    """Return the predicted class ids, labels, scored class count, names and scheme.

    A boundary model (interior / boundary / background) is scored on its objects: interior
    plus boundary, separated as ``vectorize --instances boundary`` separates them.
    """
    import numpy as np

    probabilities = predict_whole(model, metadata, pixels)
    scheme = metadata.extra.get("instances")
    if isinstance(scheme, dict) and scheme.get("method") == "boundary":
        labels = probabilities.argmax(0).astype(np.uint8)
        return (labels > 0).astype(np.uint8), labels, 1, tuple(metadata.classes[1:-1]), scheme
    if probabilities.ndim == 2:
        predicted = (probabilities >= threshold).astype(np.uint8)
        return predicted, predicted, 1, tuple(metadata.classes), None
    predicted = probabilities.argmax(0).astype(np.uint8)
    return predicted, predicted, probabilities.shape[0] - 1, tuple(metadata.classes[1:]), None


def _boundary_instances(labels: Any, channels: int, transform: Any) -> Any:
    """Instances of a boundary model's label raster, as ``vectorize`` separates them."""
    from pipeline.vectorize.instances import InstanceRules, instance_polygons, instance_raster

    rules = InstanceRules(
        "boundary", marker_classes=tuple(range(1, channels - 1)), boundary_class=channels - 1
    )
    instances, _ = instance_raster(labels, rules)
    return instance_polygons(instances, transform)


def _in_band(geometries: Any, image: Any, holdout: Any, band: tuple[int, int] | None) -> Any:
    """Keep geometries whose representative point lies in the hold-out band."""
    import numpy as np
    import shapely

    if band is None or not len(geometries):
        return geometries
    points = shapely.point_on_surface(geometries)
    inverse = ~image.georef.transform
    a, b, c, d, e, f = tuple(inverse)[:6]
    x, y = shapely.get_x(points), shapely.get_y(points)
    position = (d * x + e * y + f) if holdout.axis == "rows" else (a * x + b * y + c)
    keep = (position >= band[0]) & (position < band[1])
    return np.asarray(geometries)[keep]


def main(args: argparse.Namespace) -> int:
    """Train from the config and flags; print where the checkpoints went and the scores."""
    from pipeline.errors import ConfigError

    if args.config is None and not args.image:
        raise ConfigError("give a training config (YAML) or --image and --labels")
    config, base = load_config(args.config)
    config = _apply_flags(config, args)
    # The command line as typed, for the metrics file (only when run as ``gigaseg train``).
    # URLs lose their credentials (a signed --image URL's signature): it goes into checkpoints.
    from pipeline.read.location import redact_text

    typed = "gigaseg " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["train"] else None
    command = None if typed is None else redact_text(typed)
    started = time.perf_counter()
    summary = run_training(
        config,
        base,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        command=command,
    )
    result = summary["train"]
    print(
        f"trained {result['steps']} steps in {time.perf_counter() - started:.0f} s "
        f"({result['device']}, {result['precision']}); best epoch {result['best_epoch']}"
    )
    print(f"checkpoints: {result['last']} (last), {result['best']} (best)")
    if "export" in summary:
        print(f"model: {summary['export']}")
    for name, regions in summary.get("evaluation", {}).items():
        for region, entry in regions.items():
            if not isinstance(entry, dict):
                continue
            pixel = next(iter(entry["pixels"].values()))
            text = f"{name} [{region}]: pixel IoU {pixel['iou']:.3f}"
            if "objects" in entry:
                text += f", object F1 {entry['objects']['f1']:.3f}"
            print(text)
    if "metrics" in summary:
        print(f"metrics: {summary['metrics']}")
    return 0
