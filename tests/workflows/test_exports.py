"""Resume never serves a stale export: a file is kept only if the store content it came from
and every setting that shapes it are what the previous run recorded for it."""

from __future__ import annotations

import copy
import io
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import workflows
from pipeline.errors import StoreError

pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
)


def _spec(model: Path, scene: Path, out: Path) -> dict[str, Any]:
    return {
        "name": "stale",
        "inputs": [str(scene)],
        "model": str(model),
        "tiling": {"tile": 32},
        "output": {"dir": str(out)},
        "exports": [{"path": "{dir}/{stem}.gpkg"}, {"path": "{dir}/{stem}.tif"}],
    }


def _states(report: Any) -> list[tuple[str, str | None]]:
    return [(e.status, e.reason) for s in report.scenes for e in s.exports]


def test_exports_are_rebuilt_exactly_when_stale(
    tiny_model: Path, geotiff_factory: Callable[..., Path], tmp_path: Path, local_client: Any
) -> None:
    scene = geotiff_factory("a.tif", height=64, width=80, seed=3)
    out = tmp_path / "out"
    spec = _spec(tiny_model, scene, out)

    def run(data: dict[str, Any], **kwargs: Any) -> Any:
        stream = io.StringIO()
        report = workflows.run(
            data, resume=True, client=local_client, progress=False, stream=stream, **kwargs
        )
        return report, stream.getvalue()

    first = workflows.run(spec, client=local_client, progress=False, stream=io.StringIO())
    assert _states(first) == [("written", None), ("written", None)]
    assert (out / "a.qml").exists()  # the gpkg's QGIS style
    record = first.scenes[0].exports[1]
    assert record.settings == {
        "format": "cog", "class": None, "resampling": "mode", "compress": "deflate",
        "blocksize": 512,
    }  # fmt: skip
    assert record.store is not None and record.store["run_id"] and record.store["completed_at"]

    same, _ = run(spec)
    assert _states(same) == [("skipped (up to date)", None)] * 2

    # A vectorize setting changes the vector export only; the raster is not shaped by it.
    bigger, table = run(spec, overrides={"vectorize": {"min_area": 200}})
    assert _states(bigger) == [
        ("written", "settings changed: min_area 0.0 -> 200.0"),
        ("skipped (up to date)", None),
    ]
    assert "rebuilt: settings changed: min_area 0.0 -> 200.0" in table
    again, _ = run(spec, overrides={"vectorize": {"min_area": 200}})
    assert _states(again) == [("skipped (up to date)", None)] * 2

    # A changed export format option rebuilds that export.
    zstd = copy.deepcopy(spec)
    zstd["exports"][1]["compress"] = "zstd"
    recompressed, _ = run(zstd, overrides={"vectorize": {"min_area": 200}})
    assert _states(recompressed) == [
        ("skipped (up to date)", None),
        ("written", "settings changed: compress 'deflate' -> 'zstd'"),
    ]

    # A file replaced by hand is not trusted.
    (out / "a.tif").write_bytes((out / "a.tif").read_bytes() + b"\0")
    touched, _ = run(zstd, overrides={"vectorize": {"min_area": 200}})
    assert _states(touched)[1] == ("written", "the file changed since it was written")

    # The store deleted and recomputed: same settings, new content -> both rebuilt.
    old_run = touched.scenes[0].exports[0].store["run_id"]
    shutil.rmtree(out / "a.zarr")
    recomputed, _ = run(zstd, overrides={"vectorize": {"min_area": 200}})
    assert recomputed.scenes[0].status == "complete"
    new_run = recomputed.scenes[0].exports[0].store["run_id"]
    assert new_run != old_run
    assert (
        _states(recomputed)
        == [
            ("written", f"store recomputed (run {old_run} -> {new_run})"),
        ]
        * 2
    )


def test_resume_with_another_threshold_is_refused_naming_it(
    tiny_model: Path, geotiff_factory: Callable[..., Path], tmp_path: Path, local_client: Any
) -> None:
    scene = geotiff_factory("b.tif", height=32, width=32, seed=4)
    spec = _spec(tiny_model, scene, tmp_path / "out")
    workflows.run(spec, client=local_client, progress=False, stream=io.StringIO())
    with pytest.raises(StoreError, match=r"cannot resume .*threshold 0.5 != 0.7"):
        workflows.run(
            spec,
            resume=True,
            client=local_client,
            progress=False,
            stream=io.StringIO(),
            overrides={"inference": {"threshold": 0.7}},
        )


@pytest.mark.parametrize(
    ("key", "value"),
    [("min_separation", 6.0), ("marker_threshold", 3.0), ("min_marker_area", 25.0)],
)
def test_every_vectorize_setting_but_chunk_makes_a_vector_export_stale(
    key: str, value: float, tmp_path: Path
) -> None:
    from workflows.exports import export_settings, file_stamp, stale_reason
    from workflows.spec import Export, Vectorize

    path = tmp_path / "a.gpkg"
    path.write_bytes(b"made before")
    export = Export(path=str(path))
    store = {"run_id": "r1", "completed_at": "t1"}
    before = export_settings("gpkg", export, Vectorize(instances="distance"))
    previous = {"settings": before, "store": store, "file": file_stamp(path)}
    assert stale_reason(path, store, before, previous) is None
    changed = export_settings("gpkg", export, Vectorize(instances="distance", **{key: value}))
    assert stale_reason(path, store, changed, previous) == (
        f"settings changed: {key} None -> {value!r}"
    )
    # the chunk size does not change the (exact) result: not a reason to rebuild
    rechunked = export_settings("gpkg", export, Vectorize(instances="distance", chunk=64))
    assert stale_reason(path, store, rechunked, previous) is None


def test_resume_of_a_complete_store_with_other_pixel_settings_is_refused_naming_them(
    tiny_model: Path, geotiff_factory: Callable[..., Path], tmp_path: Path, local_client: Any
) -> None:
    """A complete store is not "finished" for a run that would make other pixels: the run
    stops naming the difference instead of keeping the store (and its exports) as they are."""
    scene = geotiff_factory("c.tif", height=32, width=32, seed=5)
    spec = _spec(tiny_model, scene, tmp_path / "out")
    spec["inference"] = {"precision": "fp32"}
    workflows.run(spec, client=local_client, progress=False, stream=io.StringIO())
    changes = [
        ({"tiling": {"halo": 32}}, r"halo \d+ != 32"),
        ({"read": {"bands": [3, 2, 1]}}, r"bands \[1, 2, 3\] != \[3, 2, 1\]"),
        ({"inference": {"precision": "bf16"}}, "precision 'fp32' != 'bf16'"),
        ({"inference": {"tta": 2}}, "tta 1 != 2"),
    ]
    for overrides, named in changes:
        with pytest.raises(StoreError, match=f"cannot resume .*{named}"):
            workflows.run(
                spec, resume=True, client=local_client, progress=False,
                stream=io.StringIO(), overrides=overrides,
            )  # fmt: skip
    same = workflows.run(
        spec, resume=True, client=local_client, progress=False, stream=io.StringIO()
    )
    assert same.scenes[0].status == "skipped (complete)"
