"""Instance separation: touching objects split right, and chunked runs equal the whole raster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rasterio.features import rasterize, shapes

from pipeline.errors import ConfigError
from pipeline.sample.boundary import boundary_targets
from pipeline.vectorize import stable_ids, vectorize
from pipeline.vectorize.instances import InstanceRules, expand_markers, instance_raster

from .helpers import read_parquet

BOUNDARY_CLASSES = ["background", "building", "boundary"]


def touching(count: int, shape: str, layout: str, radius: int = 6) -> np.ndarray:
    """Object ids of ``count`` disks or squares touching in pairs or in chains (0 = none).

    Neighbours overlap by two pixels (the later one keeps the shared pixels), so every
    neighbour shares a long edge: one connected component per pair or chain. Every second
    square sits half a side lower (a brick wall): two squares in line would make one
    rectangle, which nothing could split.
    """
    step = 2 * radius - 1
    per_row = 2 if layout == "pairs" else min(count, 10)
    groups = -(-count // per_row)
    gap = 3 * radius + 4
    columns = per_row if layout == "chains" else 2 * max(1, int(np.sqrt(groups)))
    height = (groups // max(1, columns // per_row) + 2) * gap
    width = columns * (step + 2) + gap * (columns // per_row + 1) + 2 * radius
    ids = np.zeros((height, width), np.int32)
    yy, xx = np.mgrid[:height, :width]
    placed = 0
    groups_per_line = max(1, columns // per_row)
    for group in range(groups):
        line, slot = divmod(group, groups_per_line)
        top = gap // 2 + line * gap + radius
        left = radius + 2 + slot * (per_row * step + gap)
        for k in range(per_row):
            if placed == count:
                break
            cy, cx = top + (radius // 2 if shape == "squares" and k % 2 else 0), left + k * step
            if shape == "disks":
                inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius * radius
            else:
                inside = (abs(yy - cy) <= radius - 1) & (abs(xx - cx) <= radius - 1)
            placed += 1
            ids[inside] = placed
    assert placed == count
    return ids


def boundary_labels(ids: np.ndarray, radius: float = 1.5) -> np.ndarray:
    """Interior 1 / boundary 2 / background 0, as the boundary model is trained to predict."""
    return boundary_targets(ids, (ids > 0).astype(np.uint8), radius, 2)


def write_labels(path: Path, labels: np.ndarray, classes: list[str]) -> Path:
    """A label Zarr array whose attributes name its classes (as predict's stores do)."""
    array = zarr.create_array(str(path), shape=labels.shape, dtype="uint8", chunks=(16, 16))
    array[...] = labels
    array.attrs["classes"] = classes
    return path


def run(source: Any, tmp_path: Path, chunk: int, **kwargs: Any) -> dict[int, Any]:
    """Vectorize in-process to GeoParquet (pixel frame); id -> (class, polygon, row)."""
    out = tmp_path / f"out-{chunk}-{len(list(tmp_path.iterdir()))}.parquet"
    vectorize(source, out, chunk=chunk, workers=0, progress=False, **kwargs)
    return read_parquet(out)


def reference(labels: np.ndarray, rules: InstanceRules) -> dict[int, tuple[int, Any]]:
    """The whole-raster instance raster, traced: stable id -> (class, polygon)."""
    instances, classes = instance_raster(labels, rules)
    geoms, values = [], []
    for geom, value in shapes(instances, mask=instances > 0, connectivity=8):
        geoms.append(shapely.make_valid(shapely.geometry.shape(geom)))
        values.append(int(value))
    # an instance is one 8-connected region, so one traced polygon per instance
    assert len(set(values)) == len(values)
    arr = np.empty(len(geoms), object)
    arr[:] = geoms
    ids = stable_ids(arr, labels.shape[1])
    return {int(i): (int(classes[v]), g) for i, v, g in zip(ids, values, geoms, strict=True)}


def assert_equal_instances(got: dict[int, Any], ref: dict[int, tuple[int, Any]]) -> None:
    """Same count, same ids, same class and the same pixels (zero symmetric difference)."""
    assert len(got) == len(ref)
    assert got.keys() == ref.keys()
    for key, (cid, geom, _) in got.items():
        rcid, rgeom = ref[key]
        assert cid == rcid
        assert geom.is_valid
        assert shapely.symmetric_difference(geom, rgeom).area == 0, key


def best_iou(ids: np.ndarray, polygons: list[Any]) -> np.ndarray:
    """For each true object, the best IoU of an output polygon (pixel sets).

    Instance polygons do not overlap, so one rasterized id image and one contingency table
    of (truth, prediction) pixel pairs give every IoU at once.
    """
    predicted = rasterize([(p, k + 1) for k, p in enumerate(polygons)], out_shape=ids.shape,
                          dtype="int32") if polygons else np.zeros(ids.shape, np.int32)  # fmt: skip
    n_pred = len(polygons) + 1
    pairs = np.bincount(ids.ravel().astype(np.int64) * n_pred + predicted.ravel(),
                        minlength=(int(ids.max()) + 1) * n_pred).reshape(-1, n_pred)  # fmt: skip
    inter = pairs[1:, 1:]
    union = pairs[1:].sum(1)[:, None] + pairs[:, 1:].sum(0)[None, :] - inter
    iou = inter / np.maximum(union, 1)
    return iou.max(1) if iou.shape[1] else np.zeros(len(iou))


@pytest.mark.parametrize("layout", ["pairs", "chains"])
@pytest.mark.parametrize("shape", ["disks", "squares"])
@pytest.mark.parametrize("count", [2, 7, 40, 200])
def test_touching_objects_split_into_the_right_number(
    tmp_path: Path, count: int, shape: str, layout: str
) -> None:
    ids = touching(count, shape, layout)
    # without separation, each pair / chain is one polygon
    plain = run((ids > 0).astype(np.uint8), tmp_path, 10_000)
    assert len(plain) == -(-count // (2 if layout == "pairs" else min(count, 10)))
    for method, labels in (
        ("distance", (ids > 0).astype(np.uint8)),
        ("boundary", boundary_labels(ids)),
    ):
        source: Any = labels
        if method == "boundary":
            source = write_labels(tmp_path / f"{method}.zarr", labels, BOUNDARY_CLASSES)
        got = run(source, tmp_path, 10_000, instances=method, reach=8, min_separation=4)
        assert len(got) == count, method
        ious = best_iou(ids, [g for _, g, _ in got.values()])
        assert ious.min() >= 0.9, (method, ious.min())
        # 37 px chunks cut objects and chains: the same instances
        chunked = run(source, tmp_path, 37, instances=method, reach=8, min_separation=4)
        assert_equal_instances(chunked, {k: (c, g) for k, (c, g, _) in got.items()})


def _crossing(shape: tuple[int, int] = (90, 110)) -> np.ndarray:
    """Touching objects plus large ones that cross 2 and 4 chunks of every tested size."""
    ids = touching(12, "disks", "chains", radius=5)
    out = np.zeros(shape, np.int32)
    out[: ids.shape[0], : ids.shape[1]] = ids[: shape[0], : shape[1]]
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    n = int(out.max())
    # a big disk over the corner where four 37-px (and 16-, 7-px) chunks meet
    out[((yy - 74) ** 2 + (xx - 74) ** 2 <= 14**2) & (out == 0)] = n + 1
    # a long bar over a vertical seam (2 chunks), touching the disk
    out[50:58, 20:62][out[50:58, 20:62] == 0] = n + 2
    return out


@pytest.mark.parametrize("chunk", [7, 16, 37])
@pytest.mark.parametrize("method", ["distance", "boundary"])
def test_chunked_equals_whole_raster(tmp_path: Path, method: str, chunk: int) -> None:
    ids = _crossing()
    if method == "distance":
        labels = (ids > 0).astype(np.uint8)
        rules = InstanceRules("distance", reach=8, separation=2.0, threshold=2.0,
                              marker_classes=(1,))  # fmt: skip
        source: Any = labels
    else:
        labels = boundary_labels(ids)
        rules = InstanceRules("boundary", reach=8, marker_classes=(1,), boundary_class=2)
        source = write_labels(tmp_path / "labels.zarr", labels, BOUNDARY_CLASSES)
    ref = reference(labels, rules)
    whole = run(source, tmp_path, 10_000, instances=method, reach=8)
    assert_equal_instances(whole, ref)
    got = run(source, tmp_path, chunk, instances=method, reach=8)
    assert_equal_instances(got, ref)
    # the corner disk crosses 4 chunks and the bar 2: both came out whole
    for row, col in ((74, 74), (54, 40)):
        point = shapely.Point(col + 0.5, row + 0.5)
        holders = [g for _, g, _ in got.values() if g.contains(point)]
        assert len(holders) == 1
        pixels = np.argwhere(rasterize([(holders[0], 1)], out_shape=ids.shape))
        pieces = {(int(y) // chunk, int(x) // chunk) for y, x in pixels}
        assert len(pieces) >= 2


def test_pixel_counts_and_mean_probability_match_the_whole_raster(tmp_path: Path) -> None:
    ids = _crossing()
    rng = np.random.default_rng(0)
    probs = np.where(ids > 0, rng.uniform(0.5, 1.0, ids.shape), rng.uniform(0, 0.49, ids.shape))
    probs = probs.astype(np.float32)
    whole = run(probs, tmp_path, 10_000, threshold=0.5, instances="distance", reach=8)
    got = run(probs, tmp_path, 16, threshold=0.5, instances="distance", reach=8)
    assert got.keys() == whole.keys()
    for key, (_, geom, row) in got.items():
        assert row["area_px"] == whole[key][2]["area_px"] == geom.area
        assert row["mean_probability"] == pytest.approx(whole[key][2]["mean_probability"], 1e-9)
        mask = rasterize([(geom, 1)], out_shape=ids.shape).astype(bool)
        assert row["mean_probability"] == pytest.approx(float(probs[mask].mean()), 1e-5)


def test_an_instance_the_chunk_edge_cuts_in_two_keeps_its_sums(tmp_path: Path) -> None:
    # a U: the chunk edge at row 16 leaves its two arms as two pieces of one instance in the
    # upper chunk, whose pixel counts and probability sums are taken per piece
    mask = np.zeros((32, 32), bool)
    mask[16:24, 1:15] = True  # the base holds the marker (distance 4 >= threshold 3)
    mask[12:16, 1:4] = mask[12:16, 12:15] = True  # arms 3 px wide: distance <= 2, no marker
    rng = np.random.default_rng(3)
    probs = np.where(mask, rng.uniform(0.5, 1.0, mask.shape), rng.uniform(0, 0.49, mask.shape))
    probs = probs.astype(np.float32)
    options = {"threshold": 0.5, "instances": "distance", "reach": 10, "marker_threshold": 3}
    whole = run(probs, tmp_path, 10_000, **options)
    got = run(probs, tmp_path, 16, **options)
    assert len(got) == len(whole) == 1 and got.keys() == whole.keys()
    ((key, (_, geom, row)),) = got.items()
    upper = shapely.get_parts(shapely.intersection(geom, shapely.box(0, 0, 16, 16)))
    # the case under test: two pieces in one chunk
    assert sum(part.geom_type == "Polygon" for part in upper) == 2
    assert row["area_px"] == whole[key][2]["area_px"] == mask.sum()
    assert row["mean_probability"] == pytest.approx(float(probs[mask].mean()), 1e-6)
    assert row["mean_probability"] == pytest.approx(whole[key][2]["mean_probability"], 1e-12)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    size=st.tuples(st.integers(8, 48), st.integers(8, 48)),
    chunk=st.integers(3, 20),
    reach=st.integers(1, 6),
    method=st.sampled_from(["distance", "boundary"]),
)
def test_random_rasters_chunked_equal_whole(
    tmp_path_factory: pytest.TempPathFactory,
    seed: int,
    size: tuple[int, int],
    chunk: int,
    reach: int,
    method: str,
) -> None:
    rng = np.random.default_rng(seed)
    if method == "distance":
        labels = (rng.random(size) < 0.6).astype(np.uint8) * rng.integers(1, 3, size).astype(
            np.uint8
        )
        rules = InstanceRules("distance", reach=reach, separation=1.5, threshold=1.0)
        source: Any = labels
    else:
        labels = rng.choice(np.array([0, 1, 2], np.uint8), size=size, p=[0.3, 0.4, 0.3])
        rules = InstanceRules("boundary", reach=reach, marker_classes=(1,), boundary_class=2)
        tmp = tmp_path_factory.mktemp("labels")
        source = write_labels(tmp / "labels.zarr", labels, BOUNDARY_CLASSES)
    tmp = tmp_path_factory.mktemp("out")
    kwargs = {"instances": method, "reach": float(reach), "min_separation": 1.5,
              "marker_threshold": 1.0}  # fmt: skip
    ref = reference(labels, rules)
    assert_equal_instances(run(source, tmp, chunk, **kwargs), ref)


def test_expansion_is_bounded_and_ties_go_to_the_first_marker() -> None:
    fg = np.ones((3, 7), bool)
    markers = np.zeros((3, 7), bool)
    markers[1, 0] = markers[1, 6] = True
    owner = expand_markers(fg, markers, reach=3)
    assert owner[1, 3] == 1 * 7 + 0  # equidistant: the marker first in raster order
    assert (owner[:, 1:3] == 7).all() and (owner[:, 4:6] == 13).all()
    assert expand_markers(fg, markers, reach=1)[1, 3] == -1  # out of reach: no owner


def test_bad_instance_options(tmp_path: Path) -> None:
    labels = np.ones((8, 8), np.uint8)
    with pytest.raises(ConfigError, match="needs a class named 'boundary'"):
        run(labels, tmp_path, 16, instances="boundary")
    with pytest.raises(ConfigError, match="is not one of boundary, distance, none"):
        run(labels, tmp_path, 16, instances="watershed")
    with pytest.raises(ConfigError, match="reach must be a finite number >= 0"):
        run(labels, tmp_path, 16, instances="distance", reach=-1)


def test_boundary_is_the_default_for_boundary_models(tmp_path: Path) -> None:
    ids = touching(6, "squares", "chains")
    path = write_labels(tmp_path / "labels.zarr", boundary_labels(ids), BOUNDARY_CLASSES)
    got = run(path, tmp_path, 10_000)
    assert len(got) == 6 and {c for c, *_ in got.values()} == {1}
    plain = run(path, tmp_path, 10_000, instances="none")  # interiors + one boundary network
    assert sorted(c for c, *_ in plain.values()) == [1] * 6 + [2]
