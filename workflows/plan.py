"""Turn a validated workflow into a plan: concrete scenes, output paths and model facts.

This is the second half of validation, the part that needs the file system and the model
header: globs are expanded, inputs opened (header only), output templates filled per input,
collisions and existing outputs found, and the tile size checked against the model's
alignment read from the checkpoint header (``unet.read_metadata``, no weights loaded). Every
problem names its key path, and all of them are reported at once before any work starts.
"""

from __future__ import annotations

import glob
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import GigasegError
from pipeline.read.location import expand_remote, is_remote, location_path, redact
from workflows.spec import InputSpec, Workflow, raise_problems

__all__ = ["ModelInfo", "Plan", "Scene", "make_plan", "model_info"]

_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class ModelInfo:
    """What the run needs to know about the model before starting.

    Attributes
    ----------
    path
        The model file.
    kind
        ``"gigaseg"`` (safetensors with a header), ``"torchscript"`` or ``"onnx"``.
    alignment, halo, in_channels
        From the checkpoint header; ``None`` for models without one.
    classes, bands
        Class names and the checkpoint's band order (``None`` when unknown).
    sha256
        Checkpoint hash (gigaseg checkpoints only).
    """

    path: Path
    kind: str
    alignment: int | None = None
    halo: int | None = None
    in_channels: int | None = None
    classes: tuple[str, ...] | None = None
    bands: tuple[int, ...] | None = None
    sha256: str = ""


@dataclass(frozen=True)
class Scene:
    """One input of the run with its outputs.

    Attributes
    ----------
    index
        Position in the expanded input list (``{index}``).
    key
        The input's key path in the workflow (``inputs[1]``), for messages.
    source
        The file to read: a local path, or a URL / ``/vsi*/`` path kept as written.
    bands, level, mpp, source_mpp, tissue, assets
        Read settings after per-input overrides (a tissue file resolved against ``root``).
    stain_target
        ``read.stain_target`` resolved against ``root``.
    store
        The Zarr store it predicts into.
    exports
        ``(path, format)`` pairs.
    shape
        ``(rows, cols)`` read from the header, or ``None`` if the reader could not tell.
    """

    index: int
    key: str
    source: Path | str
    bands: tuple[int, ...] | None
    level: int | None
    mpp: float | None
    store: Path
    exports: tuple[tuple[Path, str], ...] = ()
    shape: tuple[int, int] | None = None
    source_mpp: float | None = None
    tissue: str = "auto"
    stain_target: str | None = None
    assets: tuple[str, ...] | None = None

    @property
    def name(self) -> str:
        """Short display name (the file name)."""
        return _name_parts(self.source)[1]

    @property
    def megapixels(self) -> float | None:
        """Pixels in the working frame, in millions."""
        return None if self.shape is None else self.shape[0] * self.shape[1] / 1e6

    def tiles(self, tile: int) -> int | None:
        """Count the core tiles of a ``tile`` grid."""
        if self.shape is None:
            return None
        return math.ceil(self.shape[0] / tile) * math.ceil(self.shape[1] / tile)


@dataclass(frozen=True)
class Plan:
    """Everything a run will do, resolved; built by :func:`make_plan`."""

    workflow: Workflow
    base: Path
    model: ModelInfo
    scenes: tuple[Scene, ...]
    report: Path
    out_dir: Path
    source: Path | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def name(self) -> str:
        """The run's name (``{workflow}``)."""
        return self.workflow.name or "workflow"


def model_info(path: Path) -> ModelInfo:
    """Read what the run needs from a model file's header, without loading weights.

    Raises
    ------
    CheckpointError
        If a ``.safetensors`` file has no usable gigaseg header.
    """
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return ModelInfo(path=path, kind="onnx")
    if suffix in (".pt", ".ts", ".pth", ".jit"):
        return ModelInfo(path=path, kind="torchscript")
    from unet import read_metadata

    meta = read_metadata(path)
    arch = dict(meta.architecture)
    depth = int(arch.get("depth", 4))
    alignment = 2**depth
    halo: int | None = None
    try:
        from unet import UNet

        # Building the module costs milliseconds; the halo is computed from its layers.
        halo = int(UNet(**arch).halo)
    except (TypeError, ValueError):
        halo = None
    return ModelInfo(
        path=path,
        kind="gigaseg",
        alignment=alignment,
        halo=halo,
        in_channels=int(arch["in_channels"]) if "in_channels" in arch else None,
        classes=tuple(meta.classes),
        bands=meta.bands,
        sha256=meta.sha256,
    )


def _resolve(base: Path, text: str) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else base / path


def _name_parts(path: Path | str) -> tuple[str, str, str]:
    """``(stem, name, parent folder name)`` of a local path or of a URL's path."""
    posix = location_path(path)  # a URL's path, whether written https:// or /vsicurl/https://
    return posix.stem, posix.name, posix.parent.name


def _expand(base: Path, pattern: str) -> list[Path] | list[str]:
    if is_remote(pattern):
        # URLs and /vsi*/ paths are never resolved against the local folder; an s3:// prefix
        # with a glob is listed from the bucket
        return expand_remote(pattern)
    if not _GLOB_CHARS & set(pattern):
        return [_resolve(base, pattern)]
    full = str(_resolve(base, pattern))
    # glob.glob, not Path.glob: the pattern may be absolute and span folders ("data/*/x.tif").
    return [Path(p) for p in sorted(glob.glob(full, recursive=True))]  # noqa: PTH207


def _show(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


def _fill(template: str, values: dict[str, Any]) -> str:
    return template.format(**values)


def make_plan(
    workflow: Workflow,
    *,
    source: Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    probe: bool = True,
) -> Plan:
    """Resolve ``workflow`` into a :class:`Plan`, checking everything before work starts.

    Parameters
    ----------
    workflow
        A validated workflow.
    source
        The workflow file, whose folder anchors ``root``.
    resume, overwrite
        How existing outputs are treated: an error without either flag.
    probe
        Open each input's header (shape, bands) through :func:`pipeline.read.open_source`.

    Raises
    ------
    ConfigError
        Listing every problem with its key path.
    """
    problems: list[str] = []
    base = _base_dir(workflow, source, problems)
    name = workflow.name or (source.stem if source is not None else "workflow")
    model = _check_model(workflow, base, problems)
    sources = _expand_inputs(workflow, base, problems)
    stain_target = None
    if workflow.read.stain_target is not None:
        stain_path = _resolve(base, workflow.read.stain_target)
        if not stain_path.is_file():
            problems.append(
                f"read.stain_target: {_show(stain_path, base)} does not exist; give a reference "
                "image or a JSON of fitted stain parameters"
            )
        stain_target = str(stain_path)
    out_dir = _resolve(base, _fill(workflow.output.dir, {"workflow": name}))
    report = _resolve(base, _fill(workflow.output.report, {"dir": out_dir, "workflow": name}))
    owners: dict[Path, str] = {report.resolve(): "output.report"}
    if report.exists() and not (resume or overwrite):
        problems.append(_exists("output.report", report, base))
    scenes: list[Scene] = []
    for index, (key, path, item) in enumerate(sources):
        stem, file_name, parent = _name_parts(path)
        values = {
            "dir": str(out_dir),
            "stem": stem,
            "name": file_name,
            "parent": parent,
            "index": index,
            "workflow": name,
        }
        store = _resolve(base, _fill(workflow.output.store, values))
        exports = tuple(
            (_resolve(base, _fill(export.path, values)), export.resolved_format)
            for export in workflow.exports
        )
        outputs = [("output.store", store)]
        outputs += [(f"exports[{j}].path", target) for j, (target, _) in enumerate(exports)]
        for out_key, target in outputs:
            problem = _claim(owners, out_key, target, key, path, base)
            if problem:
                problems.append(problem)
            if target.exists() and not (resume or overwrite):
                problems.append(_exists(out_key, target, base))
        bands, level, mpp = _read_settings(workflow, item)
        source_mpp = item.source_mpp if item.source_mpp is not None else workflow.read.source_mpp
        tissue = _tissue(item, key, workflow, base, problems)
        assets = item.assets if item.assets is not None else workflow.read.assets
        shape: tuple[int, int] | None = None
        if probe:
            shape, problem = _probe(path, key, item, bands, level, mpp, model, source_mpp, assets)
            if problem:
                problems.append(problem)
        scenes.append(
            Scene(
                index=index,
                key=key,
                source=path,
                bands=tuple(bands) if bands is not None else None,
                level=level,
                mpp=mpp,
                store=store,
                exports=exports,
                shape=shape,
                source_mpp=source_mpp,
                tissue=tissue,
                stain_target=stain_target,
                assets=tuple(assets) if assets else None,
            )
        )
    if problems:
        raise_problems(str(source) if source is not None else "workflow", problems)
    if model is None:  # unreachable: a missing model is one of the problems above
        raise_problems("workflow", ["model: could not be read"])
    return Plan(
        workflow=workflow,
        base=base,
        model=model,
        scenes=tuple(scenes),
        report=report,
        out_dir=out_dir,
        source=source,
    )


def _base_dir(workflow: Workflow, source: Path | None, problems: list[str]) -> Path:
    """Resolve ``root`` (relative to the workflow file's folder); the cwd when unset."""
    if workflow.root is None:
        return Path.cwd()
    anchor = source.parent if source is not None else Path.cwd()
    base = _resolve(anchor, workflow.root)
    if not base.is_dir():
        problems.append(f"root: folder {base} does not exist")
        return base.absolute()
    return base.resolve()


def _check_model(workflow: Workflow, base: Path, problems: list[str]) -> ModelInfo | None:
    """Read the model header and check the tiling against its alignment."""
    model_path = _resolve(base, workflow.model)
    if not model_path.is_file():
        problems.append(f"model: no such file {workflow.model} (resolved to {model_path})")
        return None
    try:
        model = model_info(model_path)
    except GigasegError as exc:
        problems.append(f"model: {exc}")
        return None
    if model.alignment:
        for key in ("tile", "patch"):
            size = getattr(workflow.tiling, key)
            if isinstance(size, int) and size % model.alignment:
                lower = size // model.alignment * model.alignment
                hint = (f"{lower} or " if lower else "") + f"{lower + model.alignment}"
                problems.append(
                    f"tiling.{key}: must be a multiple of {model.alignment}, got {size} "
                    f"({model.alignment} is the model's alignment, 2**depth; use {hint})"
                )
    return model


def _expand_inputs(
    workflow: Workflow, base: Path, problems: list[str]
) -> list[tuple[str, Path | str, InputSpec]]:
    """Expand globs in order; report missing files, empty globs and duplicates."""
    sources: list[tuple[str, Path | str, InputSpec]] = []
    seen: dict[Path | str, str] = {}
    for i, item in enumerate(workflow.inputs):
        key = f"inputs[{i}]"
        try:
            matches = _expand(base, item.path)
        except GigasegError as exc:
            problems.append(f"{key}.path: {exc}")
            continue
        if not matches:
            where = redact(item.path) if is_remote(item.path) else f"(in {base})"
            problems.append(f"{key}.path: glob {redact(item.path)!r} matches no files {where}")
            continue
        for path in matches:
            if isinstance(path, str):  # remote: the reader checks it when probing
                if path in seen:
                    problems.append(f"{key}.path: {redact(path)} is already in {seen[path]}")
                    continue
                seen[path] = key
                sources.append((key, path, item))
                continue
            if not path.exists():
                problems.append(f"{key}.path: no such file {item.path} (resolved to {path})")
                continue
            real = path.resolve()
            if real in seen:
                problems.append(f"{key}.path: {_show(path, base)} is already in {seen[real]}")
                continue
            seen[real] = key
            sources.append((key, path, item))
    return sources


def _claim(
    owners: dict[Path, str], out_key: str, target: Path, key: str, path: Path | str, base: Path
) -> str | None:
    """Register ``target`` as written by input ``key``; a problem if someone else writes it.

    Paths are compared resolved (``..`` and symlinks followed), so two templates that spell
    one file differently still collide; an output that is, or is a folder holding, an input
    would destroy it (``--overwrite`` deletes the old output first). Remote inputs cannot be
    overwritten by a local output.
    """
    from pipeline.export.atomic import holds

    real = target.resolve()
    local = isinstance(path, Path)
    if local and holds(real, path):
        what = "overwrite" if real == path.resolve() else "delete the folder holding"
        return f"{out_key}: {_show(target, base)} would {what} input {key}; choose another path"
    shown = _show(path, base) if isinstance(path, Path) else redact(path)
    if real in owners:
        return (
            f"{out_key}: {key} ({shown}) and {owners[real]} both write "
            f"{_show(real, base)}; add {{parent}} or {{index}} to the template"
        )
    owners[real] = f"{out_key} of {key} ({shown})"
    return None


def _exists(out_key: str, target: Path, base: Path) -> str:
    return (
        f"{out_key}: {_show(target, base)} exists; pass --resume to continue the run or "
        "--overwrite to replace it"
    )


def _read_settings(
    workflow: Workflow, item: InputSpec
) -> tuple[list[int] | None, int | None, float | None]:
    """Bands, level and mpp for one input: its own values over ``read``'s."""
    bands = item.bands if item.bands is not None else workflow.read.bands
    if item.level is not None or item.mpp is not None:
        return bands, item.level, item.mpp
    return bands, workflow.read.level, workflow.read.mpp


def _tissue(item: InputSpec, key: str, workflow: Workflow, base: Path, problems: list[str]) -> str:
    """Return the tissue keyword or mask file of one input (a file resolved against root)."""
    from pipeline.read.tissue import TISSUE_MODES

    value = item.tissue if item.tissue is not None else workflow.read.tissue
    where = f"{key}.tissue" if item.tissue is not None else "read.tissue"
    if value in TISSUE_MODES:
        return value
    path = _resolve(base, value)
    if not path.is_file():
        problems.append(
            f"{where}: {value!r} is neither one of {', '.join(TISSUE_MODES)} nor an existing "
            f"file ({_show(path, base)})"
        )
    return str(path)


def _probe(
    path: Path | str,
    key: str,
    item: Any,
    bands: Sequence[int] | None,
    level: int | None,
    mpp: float | None,
    model: ModelInfo | None,
    source_mpp: float | None = None,
    assets: Sequence[str] | None = None,
) -> tuple[tuple[int, int] | None, str | None]:
    """Open the input's header; return its shape, or a problem naming the key."""
    try:
        from pipeline.read import open_source
    except ImportError:  # the reader stage is not installed: predict will check
        return None, None
    wanted = bands if bands is not None else (model.bands if model is not None else None)
    bands_key = f"{key}.bands" if item.bands is not None else "read.bands"
    try:
        reader = open_source(
            str(path),
            bands=list(wanted) if wanted else None,
            level=level,
            mpp=mpp,
            source_mpp=source_mpp,
            assets=list(assets) if assets else None,
        )
    except GigasegError as exc:
        where = bands_key if "band" in str(exc).lower() else f"{key}.path"
        return None, f"{where}: {exc}"
    count = len(reader.bands)
    if model is not None and model.in_channels is not None and count != model.in_channels:
        example = [1] * model.in_channels if count == 1 else list(range(1, model.in_channels + 1))
        return None, (
            f"{bands_key}: the model takes {model.in_channels} bands but "
            f"{_name_parts(path)[1]} gives "
            f"{count} ({list(reader.bands)}); set {bands_key}, e.g. {example}"
        )
    return (int(reader.shape[0]), int(reader.shape[1])), None
