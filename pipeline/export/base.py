"""The writer interface and the temp-then-rename life cycle every writer shares."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Protocol

from pipeline.export.atomic import commit, remove_stale_temporaries, temporary_path
from pipeline.export.features import FeatureBatch, Schema
from pipeline.export.style import qgis_style, write_qml

__all__ = ["FeatureWriter", "FileWriter"]


class FeatureWriter(Protocol):
    """Streams feature batches to one output file."""

    path: Path
    count: int

    def write(self, batch: FeatureBatch) -> None:
        """Append a batch."""

    def close(self) -> None:
        """Finish the file and give it its final name."""

    def abort(self) -> None:
        """Drop the partial file."""


class FileWriter:
    """Base for writers: owns the temporary file and the final rename.

    Subclasses implement ``_open``, ``_write`` and ``_finish``; ``close`` renames only after
    ``_finish`` succeeded, and ``abort`` (or an exception inside a ``with`` block) removes
    the temporary file, so a crashed run never leaves a truncated file under the final name.
    """

    #: Whether a QGIS style (class colours) is written as a ``.qml`` beside the file.
    qgis_style = False

    def __init__(self, path: str | Path, schema: Schema) -> None:
        self.path = Path(path)
        self.schema = schema
        remove_stale_temporaries(self.path)
        self.tmp = temporary_path(self.path)
        self.count = 0
        self._closed = False
        self._open()

    def _open(self) -> None:
        raise NotImplementedError

    def _write(self, batch: FeatureBatch) -> int:
        raise NotImplementedError

    def _finish(self) -> None:
        raise NotImplementedError

    def write(self, batch: FeatureBatch) -> None:
        """Append a batch of features."""
        if len(batch):
            self.count += self._write(batch)

    def close(self) -> None:
        """Finish the file and rename it to its final name."""
        if self._closed:
            return
        self._closed = True
        try:
            self._finish()
        except BaseException:
            self.tmp.unlink(missing_ok=True)
            raise
        commit(self.tmp, self.path)
        if self.qgis_style and self.schema.classes:
            style = qgis_style(self.schema.classes, self.schema.geometry, colors=self.schema.colors)
            write_qml(self.path, style)

    @property
    def layer(self) -> str:
        """Layer name of formats that have one (the file name up to its first dot)."""
        return self.path.name.split(".")[0] or "features"

    def abort(self) -> None:
        """Remove the temporary file; the final name is left untouched."""
        if not self._closed:
            self._closed = True
            with contextlib.suppress(Exception):
                self._finish()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> FileWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
