"""A workflow's exports: what shapes each one, and whether a file on disk is still up to date.

An export is up to date only when the file is the one the previous run recorded (same size
and modification time), made from the same store content (the store's ``run_id`` and the
time it was completed: a recomputed or resumed store has a new one) with the same settings
(every option that changes the file's content; the vectorize chunk size does not, the
result being exact). Anything else rebuilds it, and the reason is reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from workflows.spec import Export, Vectorize

__all__ = [
    "VECTOR_NOT_SHAPING",
    "VECTOR_SHAPING",
    "export_settings",
    "file_stamp",
    "read_record",
    "record_path",
    "run_export",
    "stale_reason",
    "store_identity",
    "write_record",
]

#: ``vectorize`` settings that do not change a vector export's content (the chunked result
#: is exact whatever the chunk size). Every other ``vectorize`` setting shapes it, including
#: any added later: a setting missing from a list of shaping keys would let ``--resume`` keep
#: a stale file.
VECTOR_NOT_SHAPING = ("chunk",)
#: The ``vectorize`` settings that change a vector export's content.
VECTOR_SHAPING = tuple(name for name in Vectorize.model_fields if name not in VECTOR_NOT_SHAPING)


def export_settings(fmt: str, export: Export, vectorize: Vectorize) -> dict[str, Any]:
    """Return every setting that shapes one export, as plain data."""
    if fmt == "cog":
        from pipeline.export.raster import raster_settings

        return {
            "format": fmt,
            **raster_settings(
                class_name=export.class_name,
                resampling=export.resampling,
                compress=export.compress,
            ),
        }
    settings: dict[str, Any] = {"format": fmt, "crs": export.crs}
    settings.update({key: getattr(vectorize, key) for key in VECTOR_SHAPING})
    if fmt == "qupath":
        settings["object_type"] = export.object_type
    return settings


def store_identity(store: Path) -> dict[str, Any]:
    """Return what identifies a store's content: its ``run_id`` and completion time."""
    from pipeline.errors import StoreError
    from pipeline.store import read_attrs

    try:
        attrs = read_attrs(store)
    except StoreError:
        return {"run_id": None, "completed_at": None}
    return {"run_id": attrs.get("run_id"), "completed_at": attrs.get("completed_at")}


def file_stamp(path: Path) -> dict[str, int]:
    """Return a file's size and modification time (ns): how a replaced file is noticed."""
    stat = path.stat()
    return {"size": int(stat.st_size), "mtime_ns": int(stat.st_mtime_ns)}


def _changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    return [
        f"{key} {old.get(key)!r} -> {new.get(key)!r}"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    ]


def record_path(path: Path) -> Path:
    """Return the hidden record beside an export: how it was made (store, settings, file)."""
    return path.with_name(f".{path.name}.gigaseg.json")


def write_record(path: Path, record: Mapping[str, Any]) -> None:
    """Write the export's record as soon as the export is complete.

    A run killed after this export (before its report) then still knows, on ``--resume``,
    that the file is up to date instead of rebuilding it.
    """
    import json

    from pipeline.export.atomic import write_text

    write_text(record_path(path), json.dumps(dict(record), default=str))


def read_record(path: Path) -> dict[str, Any] | None:
    """Return the record :func:`write_record` left beside ``path`` (``None``: none readable)."""
    import json

    try:
        data = json.loads(record_path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def stale_reason(
    path: Path,
    identity: Mapping[str, Any],
    settings: Mapping[str, Any],
    previous: Mapping[str, Any] | None,
) -> str | None:
    """Return why the export at ``path`` must be rebuilt, or ``None`` when it is up to date.

    Parameters
    ----------
    path
        The export file.
    identity
        :func:`store_identity` of the store it is made from now.
    settings
        :func:`export_settings` of this run.
    previous
        The previous run report's record of this file (``None``: no record).
    """
    if not path.exists():
        return "missing"
    if previous is None or not previous.get("settings") or not previous.get("store"):
        return "no record of how it was made in the previous run report"
    old = previous["store"]
    if old.get("run_id") != identity.get("run_id"):
        return f"store recomputed (run {old.get('run_id')} -> {identity.get('run_id')})"
    if old.get("completed_at") != identity.get("completed_at"):
        return (
            f"store completed again ({old.get('completed_at')} -> {identity.get('completed_at')})"
        )
    changed = _changes(previous["settings"], settings)
    if changed:
        return "settings changed: " + "; ".join(changed)
    stamp = previous.get("file")
    unchanged = isinstance(stamp, Mapping) and dict(stamp) == file_stamp(path)
    return None if unchanged else "the file changed since it was written"


def run_export(
    store: Path,
    path: Path,
    settings: Mapping[str, Any],
    vectorize: Vectorize,
    export: Export,
    *,
    client: Any,
    overwrite: bool,
) -> Any:
    """Write one export and return the stage's report.

    ``cog`` goes through :func:`pipeline.export.export_raster`, the vector formats through
    :func:`pipeline.vectorize`.
    """
    if settings["format"] == "cog":
        from pipeline.export.raster import export_raster

        return export_raster(
            store,
            path,
            class_name=settings["class"],
            resampling=settings["resampling"],
            compress=settings["compress"],
            blocksize=settings["blocksize"],
            overwrite=overwrite,
        )
    import pipeline
    from pipeline.vectorize.settings import VectorizeSettings

    return pipeline.vectorize(
        str(store),
        str(path),
        VectorizeSettings(**vectorize.model_dump()),
        format=settings["format"],
        client=client,
        overwrite=overwrite,
        progress=False,
        object_type=export.object_type,
        crs=settings.get("crs"),
    )
