"""The run report: per scene and in total, as JSON next to the outputs and a table on screen.

Per scene: wall time per stage (read, infer, write from ``pipeline.predict``'s report;
vectorize and export from ``pipeline.vectorize``'s), tiles computed / skipped / total,
megapixels and megapixels per second, peak worker memory and where each output went. The
JSON also keeps the stage reports as the stages returned them (``predict``, ``exports``), so
nothing they measured is lost. The total sums stage times (CPU-side seconds over concurrent
scenes, so they can exceed the wall time) and divides all megapixels by the run's wall time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "STAGES",
    "ExportRecord",
    "RunReport",
    "SceneReport",
    "format_bytes",
    "stage_seconds",
    "tile_counts",
    "vectorize_seconds",
]

#: Stages timed per scene, in data-flow order.
STAGES = ("read", "infer", "write", "vectorize", "export")


@dataclass
class ExportRecord:
    """One export of one scene."""

    path: str
    format: str
    status: str = "pending"  # written | skipped (up to date) | failed
    seconds: float = 0.0
    report: dict[str, Any] | None = None
    #: Why a resumed run rebuilt it (``None``: up to date, or not a resumed run).
    reason: str | None = None
    #: The store content it was made from (``run_id``, ``completed_at``).
    store: dict[str, Any] | None = None
    #: Every setting that shapes the file.
    settings: dict[str, Any] | None = None
    #: Size and modification time of the file as written.
    file: dict[str, int] | None = None

    def finish(self, report: Any, seconds: float, file: dict[str, int]) -> None:
        """Record a written export: its stage report, time and file stamp."""
        to_dict = getattr(report, "to_dict", None)
        self.report = dict(to_dict()) if to_dict is not None else None
        self.seconds = seconds
        self.file = file
        self.status = "written"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "path": self.path,
            "format": self.format,
            "status": self.status,
            "reason": self.reason,
            "seconds": round(self.seconds, 4),
            "store": self.store,
            "settings": self.settings,
            "file": self.file,
            "report": self.report,
        }


@dataclass
class SceneReport:
    """What happened to one input."""

    input: str
    store: str
    status: str = "pending"  # complete | skipped (complete) | failed | interrupted | planned
    error: str | None = None
    seconds: float = 0.0
    stages: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    tiles_computed: int = 0
    tiles_skipped: int = 0
    tiles_resumed: int = 0
    tiles_total: int = 0
    megapixels: float = 0.0
    megapixels_computed: float = 0.0
    predict_seconds: float = 0.0
    peak_worker_memory: int | None = None
    exports: list[ExportRecord] = field(default_factory=list)
    predict: dict[str, Any] | None = None

    @property
    def mpx_per_s(self) -> float:
        """Megapixels computed per second of this scene's prediction wall time."""
        seconds = self.predict_seconds or self.seconds
        return self.megapixels_computed / seconds if seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "input": self.input,
            "status": self.status,
            "error": self.error,
            "seconds": round(self.seconds, 4),
            "stages": {k: round(v, 4) for k, v in self.stages.items()},
            "tiles": {
                "computed": self.tiles_computed,
                "skipped": self.tiles_skipped,
                "resumed": self.tiles_resumed,
                "total": self.tiles_total,
            },
            "megapixels": round(self.megapixels, 6),
            "megapixels_computed": round(self.megapixels_computed, 6),
            "mpx_per_s": round(self.mpx_per_s, 4),
            "peak_worker_memory": self.peak_worker_memory,
            "outputs": {"store": self.store, "exports": [e.to_dict() for e in self.exports]},
            "predict": self.predict,
        }


@dataclass
class RunReport:
    """The whole run: its scenes and their total."""

    workflow: str
    cluster: str
    model: dict[str, Any]
    report_path: str
    scenes: list[SceneReport] = field(default_factory=list)
    started: str = ""
    finished: str = ""
    seconds: float = 0.0
    dry_run: bool = False
    resume: bool = False
    source: str | None = None
    job_script: str | None = None
    #: Batch jobs (ids, replaced), lost workers, recomputed tiles and a cluster error.
    cluster_log: dict[str, Any] | None = None
    error: str | None = None
    interrupted: bool = False

    @property
    def status(self) -> str:
        """``complete``, ``failed`` (a scene or the cluster) or ``interrupted`` (Ctrl-C)."""
        if self.interrupted:
            return "interrupted"
        return "complete" if self.ok else "failed"

    @property
    def ok(self) -> bool:
        """Whether no scene failed and the cluster raised no error."""
        return self.error is None and not any(s.status == "failed" for s in self.scenes)

    def total(self) -> dict[str, Any]:
        """Totals over scenes: summed stage times and tiles, overall Mpx/s, peak memory."""
        stages = {k: sum(s.stages.get(k, 0.0) for s in self.scenes) for k in STAGES}
        computed_mpx = sum(s.megapixels_computed for s in self.scenes)
        peaks = [s.peak_worker_memory for s in self.scenes if s.peak_worker_memory is not None]
        return {
            "scenes": len(self.scenes),
            "failed": sum(s.status == "failed" for s in self.scenes),
            "seconds": round(self.seconds, 4),
            "stages": {k: round(v, 4) for k, v in stages.items()},
            "tiles": {
                "computed": sum(s.tiles_computed for s in self.scenes),
                "skipped": sum(s.tiles_skipped for s in self.scenes),
                "resumed": sum(s.tiles_resumed for s in self.scenes),
                "total": sum(s.tiles_total for s in self.scenes),
            },
            "megapixels": round(sum(s.megapixels for s in self.scenes), 6),
            "megapixels_computed": round(computed_mpx, 6),
            "mpx_per_s": round(computed_mpx / self.seconds, 4) if self.seconds > 0 else 0.0,
            "peak_worker_memory": max(peaks) if peaks else None,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (what :meth:`write` stores)."""
        return {
            "gigaseg_run_report": 1,
            "workflow": self.workflow,
            "source": self.source,
            "cluster": self.cluster,
            "model": self.model,
            "started": self.started,
            "finished": self.finished,
            "dry_run": self.dry_run,
            "resume": self.resume,
            "status": self.status,
            "error": self.error,
            "cluster_log": self.cluster_log,
            "scenes": [s.to_dict() for s in self.scenes],
            "total": self.total(),
        }

    def write(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Write the JSON report (temporary name, then rename) and return its path."""
        target = Path(path or self.report_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(self.to_dict(), indent=2, default=str) + "\n")
            tmp.replace(target)
        finally:
            tmp.unlink(missing_ok=True)
        return target

    def table(self) -> str:
        """Format a short table: one row per scene and a total row, then the outputs."""
        header = ["scene", "status", "tiles", "empty", "resumed", *STAGES, "Mpx", "Mpx/s"]
        header.append("peak mem")
        rows: list[list[str]] = []
        for s in self.scenes:
            rows.append(
                [
                    Path(s.input).name,
                    s.status,
                    f"{s.tiles_computed}/{s.tiles_total}",
                    str(s.tiles_skipped),
                    str(s.tiles_resumed),
                    *(_secs(s.stages.get(k, 0.0)) for k in STAGES),
                    f"{s.megapixels:.2f}",
                    f"{s.mpx_per_s:.2f}",
                    format_bytes(s.peak_worker_memory),
                ]
            )
        t = self.total()
        rows.append(
            [
                "TOTAL",
                f"{t['scenes'] - t['failed']}/{t['scenes']} ok",
                f"{t['tiles']['computed']}/{t['tiles']['total']}",
                str(t["tiles"]["skipped"]),
                str(t["tiles"]["resumed"]),
                *(_secs(t["stages"][k]) for k in STAGES),
                f"{t['megapixels']:.2f}",
                f"{t['mpx_per_s']:.2f}",
                format_bytes(t["peak_worker_memory"]),
            ]
        )
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

        def line(cells: Sequence[str]) -> str:
            return "  ".join(
                c.ljust(w) if i < 2 else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            ).rstrip()

        out = [line(header), line(["-" * w for w in widths])]
        out += [line(r) for r in rows[:-1]]
        out += [line(["-" * w for w in widths]), line(rows[-1])]
        out.append(f"wall time {self.seconds:.1f} s on {self.cluster}")
        out.append("outputs:")
        for s in self.scenes:
            out.append(f"  {Path(s.input).name}: {s.store}")
            for e in s.exports:
                why = f" — rebuilt: {e.reason}" if e.reason and e.status == "written" else ""
                out.append(
                    f"  {'':{len(Path(s.input).name)}}  {e.path} ({e.format}, {e.status}){why}"
                )
            if s.error:
                out.append(f"  {'':{len(Path(s.input).name)}}  error: {s.error}")
        out.append(f"report: {self.report_path}")
        return "\n".join(out)


def _secs(value: float) -> str:
    return f"{value:.2f}s" if value < 100 else f"{value:.0f}s"


def format_bytes(value: int | None) -> str:
    """Human-readable size; ``-`` for unknown.

    >>> format_bytes(3 * 2**30)
    '3.0 GiB'
    """
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"  # pragma: no cover - loop always returns


def _find(data: Mapping[str, Any], *names: str) -> Any:
    """First value found under any of ``names``, searching nested mappings breadth first."""
    queue: list[Mapping[str, Any]] = [data]
    while queue:
        current = queue.pop(0)
        for name in names:
            if name in current and not isinstance(current[name], Mapping):
                return current[name]
        queue.extend(v for v in current.values() if isinstance(v, Mapping))
    return None


def stage_seconds(report: Mapping[str, Any], stages: Sequence[str]) -> dict[str, float]:
    """Pull per-stage seconds out of a stage report, whatever its nesting.

    Accepts ``{"seconds": {"read": 1.0}}``, ``{"stages": {"read": 1.0}}``,
    ``{"read_seconds": 1.0}`` or ``{"read_s": 1.0}`` forms.

    >>> stage_seconds({"seconds": {"read": 1.5, "infer": 2}}, ["read", "infer", "write"])
    {'read': 1.5, 'infer': 2.0, 'write': 0.0}
    """
    found: dict[str, float] = {}
    for stage in stages:
        value = None
        for key in ("seconds", "stages", "timings", "times", "stage_seconds"):
            nested = report.get(key)
            if isinstance(nested, Mapping) and isinstance(nested.get(stage), int | float):
                value = nested[stage]
                break
        if value is None:
            value = _find(report, f"{stage}_seconds", f"{stage}_s", f"seconds_{stage}")
        found[stage] = float(value) if isinstance(value, int | float) else 0.0
    return found


def tile_counts(report: Mapping[str, Any]) -> tuple[int, int, int, int]:
    """Return ``(computed, skipped, resumed, total)`` tiles from a predict report.

    ``skipped`` counts tiles without data, ``resumed`` tiles a previous run finished.

    >>> tile_counts({"tiles_computed": 3, "tiles_skipped": 1, "tiles_total": 5,
    ...              "tiles_already_done": 1})
    (3, 1, 1, 5)
    """
    tiles = report.get("tiles")
    if isinstance(tiles, Mapping):
        computed, skipped, resumed, total = (
            tiles.get(k) for k in ("computed", "skipped", "resumed", "total")
        )
    else:
        computed = _find(report, "tiles_computed", "computed")
        skipped = _find(report, "tiles_skipped", "skipped")
        resumed = _find(report, "tiles_already_done", "tiles_resumed")
        total = _find(report, "tiles_total", "total_tiles")
    computed = int(computed or 0)
    skipped = int(skipped or 0)
    resumed = int(resumed or 0)
    total = int(total) if isinstance(total, int | float) else computed + skipped + resumed
    return computed, skipped, resumed, total


def vectorize_seconds(report: Mapping[str, Any], wall: float) -> dict[str, float]:
    """Split one export's time into ``vectorize`` and ``export`` seconds.

    ``pipeline.vectorize`` streams features to the writer while it traces, so the split is
    approximate: ``export`` is the writer's closing time (``seconds.close``), ``vectorize``
    the rest. Without those keys, the whole wall time counts as ``vectorize``.

    >>> vectorize_seconds({"seconds": {"total": 2.0, "close": 0.5}}, 2.1)
    {'vectorize': 1.5, 'export': 0.5}
    """
    seconds = report.get("seconds")
    if isinstance(seconds, Mapping) and isinstance(seconds.get("total"), int | float):
        close = float(seconds.get("close") or 0.0)
        return {"vectorize": float(seconds["total"]) - close, "export": close}
    found = stage_seconds(report, ("vectorize", "export"))
    if not any(found.values()):
        found["vectorize"] = wall
    return found
