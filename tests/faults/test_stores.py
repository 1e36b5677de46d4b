"""Stores: damaged chunks and metadata, resume checks, runs that race for one store.

- A chunk deleted from a complete store used to read as background (50 of 51 polygons, exit
  0); a corrupt chunk printed a 90-line Zstd traceback. Expected: every done tile writes its
  chunks (even all-background ones), so ``status --verify`` finds missing and undecodable
  chunks; vectorize refuses a store with missing chunks and reports an undecodable one in one
  line; ``predict --resume --verify`` recomputes exactly the damaged tiles.
- A corrupt ``zarr.json``: one line naming it and the fix, from every command.
- ``--resume`` with other inputs (source, bands, threshold, precision...): refused, naming
  each difference (issue 13 item 8, done in the store module).
- A run whose store was taken over by another run (``--overwrite``) must not mark it
  complete (``set_status`` checks the run id).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.errors import StoreError
from pipeline.predict import predict
from pipeline.store import read_attrs, set_status
from pipeline.store.verify import chunk_key
from tests.workflows.conftest import read_store, write_geotiff
from workflows.cli import main as cli

KWARGS: dict[str, Any] = {"tile": 32, "workers": 0, "progress": False, "precision": "fp32"}


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    return write_geotiff(tmp_path / "scene.tif", height=64, width=96, seed=5)


@pytest.fixture
def store(tmp_path: Path, scene: Path, tiny_model: Path) -> Path:
    out = tmp_path / "scene.zarr"
    predict(scene, tiny_model, out, **KWARGS)
    return out


def chunk(store: Path, name: str, index: tuple[int, ...]) -> str:
    """The store-relative key of one chunk, in the store's own key encoding."""
    import zarr

    return chunk_key(zarr.open_group(str(store), mode="r")[name], index)


def one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def resume_verify(scene: Path, model: Path, store: Path) -> int:
    argv = ["predict", str(scene), "--model", str(model), "--out", str(store)]
    return cli([*argv, "--tile", "32", "--precision", "fp32", "--workers", "0", "--no-progress",
                "--resume", "--verify"])  # fmt: skip


def test_every_done_tile_writes_its_chunks(store: Path) -> None:
    assert read_attrs(store)["chunks_always_written"] is True
    keys = [chunk(store, "labels", (r, c)) for r in range(2) for c in range(3)]
    assert all((store / key).is_file() for key in keys)  # 6 tiles, 6 chunks


def test_a_deleted_chunk_is_found_refused_and_recomputed(
    store: Path, scene: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = read_store(store)
    key = chunk(store, "labels", (1, 2))
    (store / key).unlink()
    assert cli(["status", str(store), "--verify"]) == 1
    line = one_line(capsys)
    assert f"1 done tile(s) have damaged chunks ({key} missing)" in line
    assert "--resume --verify" in line
    out = store.parent / "x.geojson"
    assert cli(["vectorize", str(store), "--out", str(out), "--workers", "0", "--no-progress"]) == 1
    assert f"{key} missing" in one_line(capsys) and not out.exists()
    assert resume_verify(scene, tiny_model, store) == 0
    assert "1 tiles computed" in capsys.readouterr().out
    after = read_store(store)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])
    assert cli(["status", str(store), "--verify"]) == 0
    assert "verified 6 done tile(s)" in capsys.readouterr().out


def test_a_corrupt_chunk_is_one_line_and_recomputed(
    store: Path, scene: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = read_store(store)
    key = chunk(store, "labels", (0, 1))
    (store / key).write_bytes(b"\x28\xb5\x2f\xfd" + b"garbage" * 20)  # zstd magic, then junk
    assert cli(["status", str(store), "--verify"]) == 1
    assert f"{key} cannot be decoded" in one_line(capsys)
    out = store.parent / "x.geojson"
    assert cli(["vectorize", str(store), "--out", str(out), "--workers", "0", "--no-progress"]) == 1
    line = one_line(capsys)
    assert f"chunk {key} cannot be decoded" in line and "--resume --verify" in line
    assert not out.exists()
    assert resume_verify(scene, tiny_model, store) == 0
    np.testing.assert_array_equal(before[1], read_store(store)[1])


def test_a_corrupt_zarr_json_is_one_line_everywhere(
    store: Path, scene: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (store / "zarr.json").write_text('{"zarr_format": 3, "node_type": "gro')
    for argv in (
        ["status", str(store)],
        ["info", str(store)],
        ["vectorize", str(store), "--out", str(store.parent / "x.geojson"), "--no-progress"],
        ["predict", str(scene), "--model", str(tiny_model), "--out", str(store), "--resume"],
    ):
        assert cli(argv) == 1, argv
        line = one_line(capsys)
        assert "zarr.json is corrupt" in line and "--overwrite" in line, line
    argv = ["predict", str(scene), "--model", str(tiny_model), "--out", str(store)]
    assert cli([*argv, "--tile", "32", "--workers", "0", "--no-progress", "--overwrite"]) == 0
    assert read_attrs(store)["status"] == "complete"


@pytest.mark.parametrize(
    ("change", "named"),
    [({"threshold": 0.7}, "threshold"), ({"bands": [3, 2, 1]}, "bands")],
)
def test_resume_with_other_inputs_is_refused(
    store: Path, scene: Path, tiny_model: Path, change: dict[str, Any], named: str
) -> None:
    with pytest.raises(StoreError, match=rf"cannot resume .*{named}"):
        predict(scene, tiny_model, store, resume=True, **KWARGS, **change)


def test_resume_with_another_source_is_refused(
    store: Path, tmp_path: Path, tiny_model: Path
) -> None:
    other = write_geotiff(tmp_path / "other.tif", height=64, width=96, seed=6)
    with pytest.raises(StoreError, match=r"cannot resume .*source"):
        predict(other, tiny_model, store, resume=True, **KWARGS)


def test_a_run_cannot_mark_a_store_another_run_took_over(
    store: Path, scene: Path, tiny_model: Path
) -> None:
    first = read_attrs(store)["run_id"]
    predict(scene, tiny_model, store, overwrite=True, **KWARGS)  # another run takes it over
    with pytest.raises(StoreError, match=r"now belongs to run"):
        set_status(store, "complete", run_id=first)
    assert read_attrs(store)["run_id"] != first
