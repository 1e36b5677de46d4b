import numpy as np
import pytest
import zarr

from pipeline.errors import ConfigError, OutputExistsError, StoreError
from pipeline.stitch import to_labels
from pipeline.store import (
    DONE,
    SKIPPED,
    create_store,
    from_stored,
    mark_tiles,
    parse_probabilities,
    read_attrs,
    read_ledger,
    set_status,
    tile_counts,
    to_stored,
    write_core,
)
from pipeline.tile import Window

ATTRS = {
    "model": {"sha256": "abc"},
    "tile": 16,
    "halo": 8,
    "shape": [40, 50],
    "classes": ["building"],
    "probabilities_dtype": "uint8",
    "source": "scene.tif",
    "bands": [1, 2, 3],
    "precision_requested": "fp32",
    "threshold": 0.5,
    "tta": 1,
    "stain": None,
    "run_id": "run-1",
}


def _create(path, **kwargs):
    options = {
        "shape": (40, 50),
        "outputs": 1,
        "tile": 16,
        "grid_shape": (3, 4),
        "probabilities": "uint8",
        "attrs": ATTRS,
    }
    options.update(kwargs)
    return create_store(path, **options)


def test_layout_and_chunks_align_with_tiles(tmp_path):
    path = tmp_path / "s.zarr"
    ledger = _create(path)
    assert ledger.shape == (3, 4) and not ledger.any()
    group = zarr.open_group(str(path), mode="r")
    assert group["probabilities"].chunks == (1, 16, 16)
    assert group["labels"].chunks == (16, 16)
    assert group["tiles"].chunks == (1, 1)
    assert read_attrs(path)["status"] == "running"


def test_write_core_ledger_and_status(tmp_path):
    path = str(tmp_path / "s.zarr")
    _create(path)
    probs = np.full((1, 8, 2), 0.75, np.float32)
    write_core(
        path, Window(32, 48, 8, 2), to_stored(probs, "uint8"), to_labels(probs, "sigmoid", 0.5)
    )
    group = zarr.open_group(path, mode="r")
    assert group["probabilities"][0, 32:40, 48:50].tolist() == [[191, 191]] * 8
    assert group["labels"][32:40, 48:50].all()
    mark_tiles(path, [(2, 3)], DONE)
    mark_tiles(path, [(0, 0)], SKIPPED)
    assert tile_counts(path) == {"total": 12, "done": 1, "skipped": 1, "left": 10}
    set_status(path, "complete")
    assert read_attrs(path)["status"] == "complete"


def test_existing_store_needs_a_flag(tmp_path):
    path = tmp_path / "s.zarr"
    _create(path)
    with pytest.raises(OutputExistsError, match="already exists; use --overwrite"):
        _create(path)
    mark_tiles(str(path), [(1, 1)], DONE)
    assert _create(path, resume=True)[1, 1] == DONE
    assert not _create(path, overwrite=True).any()


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("tile", 32, "tile 16 != 32"),
        ("halo", 4, "halo 8 != 4"),
        ("model", {"sha256": "other"}, "model 'abc' != 'other'"),
        ("bands", [3, 2, 1], "bands \\[1, 2, 3\\] != \\[3, 2, 1\\]"),
        ("precision_requested", "bf16", "precision 'fp32' != 'bf16'"),
        ("threshold", 0.7, "threshold 0.5 != 0.7"),
        ("source", "other.tif", "source '.*scene.tif' != '.*other.tif'"),
        ("probabilities_dtype", "float32", "probabilities 'uint8' != 'float32'"),
        ("tta", 2, "tta 1 != 2"),
        ("stain", {"method": "reinhard", "target": {"m": 1}}, "stain 'none' != .*reinhard"),
    ],
)
def test_resume_refuses_other_settings(tmp_path, key, value, named):
    path = tmp_path / "s.zarr"
    _create(path)
    with pytest.raises(StoreError, match=f"cannot resume .*{named}.*--overwrite"):
        _create(path, resume=True, attrs={**ATTRS, key: value})
    assert read_attrs(path)["run_id"] == "run-1"  # the refused run touched nothing


def test_resume_names_every_difference(tmp_path):
    path = tmp_path / "s.zarr"
    _create(path)
    with pytest.raises(StoreError, match="tile 16 != 32; halo 8 != 4"):
        _create(path, resume=True, attrs={**ATTRS, "tile": 32, "halo": 4})


def test_a_store_that_does_not_record_a_setting_is_not_held_to_it(tmp_path):
    path = tmp_path / "s.zarr"
    older = {k: v for k, v in ATTRS.items() if k not in ("tta", "stain")}
    _create(path, attrs=older)
    _create(path, resume=True, attrs={**ATTRS, "tta": 2, "stain": {"method": "macenko"}})


def test_status_setter_checks_the_run_id(tmp_path):
    path = tmp_path / "s.zarr"
    _create(path)
    _create(path, resume=True, attrs={**ATTRS, "run_id": "run-2"})
    with pytest.raises(StoreError, match="now belongs to run 'run-2', not 'run-1'"):
        set_status(path, "complete", run_id="run-1")
    assert read_attrs(path)["status"] == "running"
    set_status(path, "complete", run_id="run-2")
    assert read_attrs(path)["status"] == "complete"
    assert read_ledger(path).shape == (3, 4)


def test_refuses_to_replace_a_non_store(tmp_path):
    path = tmp_path / "dir.zarr"
    path.mkdir()
    with pytest.raises(OutputExistsError, match="not a Zarr store"):
        _create(path, overwrite=True)


def test_unwritable_directory(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        _create(tmp_path / "missing" / "s.zarr")
    with pytest.raises(StoreError, match="not writable"):
        _create("/proc/sys/gigaseg-test.zarr")


def test_encodings():
    probs = np.array([[[0.0, 0.5, 1.0]]], np.float32)
    assert to_stored(probs, "uint8").tolist() == [[[0, 128, 255]]]
    assert to_stored(probs, "float16").dtype == np.float16
    half = np.float32(128) / np.float32(255)
    assert from_stored(to_stored(probs, "uint8")).tolist() == [[[0.0, half, 1.0]]]
    assert to_labels(probs, "sigmoid", 0.5).tolist() == [[0, 1, 1]]
    multi = np.array([[[0.7, 0.1]], [[0.2, 0.1]], [[0.1, 0.8]]], np.float32)
    assert to_labels(multi, "softmax", 0.5).tolist() == [[0, 2]]
    with pytest.raises(ConfigError, match="uint8, float16, float32"):
        parse_probabilities("int16")
