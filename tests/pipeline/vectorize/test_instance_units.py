"""Instance rules in metres and µm, the minimum marker size, and objects below min_area."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import ConfigError
from pipeline.vectorize import vectorize
from pipeline.vectorize.instances import InstanceRules

from .helpers import read_parquet, write_geotiff
from .test_instances import (
    BOUNDARY_CLASSES,
    assert_equal_instances,
    boundary_labels,
    reference,
    touching,
    write_labels,
)


def speckled(count: int = 6) -> tuple[np.ndarray, tuple[int, int]]:
    """Boundary labels of touching squares; one square holds a one-pixel interior fragment.

    The fragment is an interior pixel ringed by boundary pixels, as a boundary model may
    predict inside a roof: a marker of its own, so a seventh (small) object unless dropped.
    """
    from scipy import ndimage

    labels = boundary_labels(touching(count, "squares", "chains"))
    deep = ndimage.binary_erosion(labels == 1, structure=np.ones((5, 5), bool))
    row, col = (int(v) for v in np.argwhere(deep)[0])
    labels[row - 1 : row + 2, col - 1 : col + 2] = 2
    labels[row, col] = 1
    return labels, (row, col)


def run_to(source: Any, out: Path, **kwargs: Any) -> dict[int, Any]:
    """Vectorize in-process to GeoParquet and read it back: id -> (class, polygon, row)."""
    vectorize(source, out, workers=0, progress=False, overwrite=True, **kwargs)
    return read_parquet(out)


def test_distance_rules_are_in_metres_on_a_georeferenced_raster(tmp_path: Path) -> None:
    ids = touching(12, "disks", "chains")  # radius 6 px = 3 m at 0.5 m pixels
    labels = (ids > 0).astype(np.uint8)
    tif = write_geotiff(tmp_path / "l.tif", labels)  # EPSG:32616, 0.5 m pixels
    options = {"instances": "distance", "reach": 4.0, "min_separation": 2.0, "chunk": 16}
    got = run_to(tif, tmp_path / "m.parquet", marker_threshold=1.0, **options)
    # 4 m, 2 m and 1 m are 8, 4 and 2 pixels: the pixel rules give the same objects
    rules = InstanceRules("distance", reach=8, separation=4.0, threshold=2.0, marker_classes=(1,))
    ref = reference(labels, rules)
    assert len(got) == len(ref) == 12
    want = sorted(float(g.area) * 0.25 for _, g in ref.values())  # px -> m²
    assert sorted(row["area_m2"] for *_, row in got.values()) == pytest.approx(want)
    # a 4 m marker threshold is 8 px, deeper than any 6 px disk: no marker, no object
    # (read as pixels, 4 would leave a marker in every disk)
    assert run_to(tif, tmp_path / "t.parquet", marker_threshold=4.0, **options) == {}
    pixels = run_to(labels, tmp_path / "p.parquet", marker_threshold=4.0, reach=8, chunk=16,
                    instances="distance", min_separation=4.0)  # fmt: skip
    assert len(pixels) == 12


def test_min_marker_area_in_square_metres(tmp_path: Path) -> None:
    labels, _ = speckled()
    tif = write_geotiff(tmp_path / "l.tif", labels, tags={"classes": json.dumps(BOUNDARY_CLASSES)})
    options = {"instances": "boundary", "chunk": 16}
    # 0.2 m² is under one 0.25 m² pixel: every marker stays, the speck is a 7th object
    assert len(run_to(tif, tmp_path / "a.parquet", min_marker_area=0.2, **options)) == 7
    # 1 m² is 4 pixels: the one-pixel marker goes, its wall goes to the squares
    assert len(run_to(tif, tmp_path / "b.parquet", min_marker_area=1.0, **options)) == 6
    # min_area (object size, m²) drops the speck's small object after separation instead
    report = vectorize(tif, tmp_path / "c.parquet", workers=0, progress=False, min_area=4.0,
                       **options)  # fmt: skip
    assert report.features == 6 and report.dropped_min_area == 1


def test_min_marker_area_in_square_microns_on_a_slide_store(tmp_path: Path) -> None:
    labels, (row, col) = speckled()
    group = zarr.open_group(str(tmp_path / "slide.zarr"), mode="w")
    group.create_array("labels", shape=labels.shape, chunks=(16, 16), dtype="uint8")[:] = labels
    # labels at 2 µm per pixel (4 µm² each), level-0 coordinates 4x the label pixels
    group.attrs.update(
        {"classes": BOUNDARY_CLASSES, "status": "complete", "mpp": 2.0, "downsample": 4.0}
    )
    options: dict[str, Any] = {"instances": "boundary", "chunk": 16}
    kept = run_to(tmp_path / "slide.zarr", tmp_path / "a.parquet", min_marker_area=3.0,
                  **options)  # fmt: skip
    assert len(kept) == 7  # 3 µm² is under a pixel (read as pixels, 3 would drop the speck)
    dropped = run_to(tmp_path / "slide.zarr", tmp_path / "b.parquet", min_marker_area=8.0,
                     **options)  # fmt: skip
    assert len(dropped) == 6  # 8 µm² is 2 pixels
    speck = [r for _, g, r in kept.values() if g.contains(_centre(row, col, 4.0))]
    assert len(speck) == 1 and speck[0]["area_um2"] <= 9 * 4.0  # the fragment and its ring
    assert min(r["area_um2"] for *_, r in dropped.values()) >= 100 * 4.0  # squares only


def _centre(row: int, col: int, scale: float) -> Any:
    import shapely

    return shapely.Point((col + 0.5) * scale, (row + 0.5) * scale)


def test_min_marker_size_validation(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="minimum marker size must be at least 1 pixel"):
        InstanceRules("distance", min_marker=0)
    with pytest.raises(ConfigError, match="min_marker_area must be a finite number >= 0"):
        run_to(np.ones((8, 8), np.uint8), tmp_path / "x.parquet", instances="distance",
               min_marker_area=-1.0)  # fmt: skip


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    size=st.tuples(st.integers(8, 40), st.integers(8, 40)),
    chunk=st.integers(3, 16),
    reach=st.integers(1, 5),
    min_marker=st.integers(2, 9),
    method=st.sampled_from(["distance", "boundary"]),
)
def test_min_marker_chunked_equals_whole(
    tmp_path_factory: pytest.TempPathFactory,
    seed: int,
    size: tuple[int, int],
    chunk: int,
    reach: int,
    min_marker: int,
    method: str,
) -> None:
    rng = np.random.default_rng(seed)
    tmp = tmp_path_factory.mktemp("m")
    if method == "distance":
        labels = (rng.random(size) < 0.7).astype(np.uint8)
        rules = InstanceRules("distance", reach=reach, separation=1.0, threshold=1.0,
                              min_marker=min_marker)  # fmt: skip
        source: Any = labels
    else:
        labels = rng.choice(np.array([0, 1, 2], np.uint8), size=size, p=[0.2, 0.5, 0.3])
        rules = InstanceRules("boundary", reach=reach, marker_classes=(1,), boundary_class=2,
                              min_marker=min_marker)  # fmt: skip
        source = write_labels(tmp / "labels.zarr", labels, BOUNDARY_CLASSES)
    got = run_to(source, tmp / "o.parquet", chunk=chunk, instances=method, reach=float(reach),
                 min_separation=1.0, marker_threshold=1.0,
                 min_marker_area=float(min_marker))  # fmt: skip
    assert_equal_instances(got, reference(labels, rules))
