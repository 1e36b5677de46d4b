"""The fast instance steps equal their plain definitions (whole-array passes, sorting)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from pipeline.vectorize.instances import (
    class_mask,
    expand_markers,
    first_pixels,
    label_markers,
)

_NONE = np.iinfo(np.int32).max


def plain_expand(foreground: np.ndarray, markers: np.ndarray, reach: int) -> np.ndarray:
    """The expansion rule written out over the whole array: every step looks at every pixel."""
    height, width = foreground.shape
    index = np.arange(height * width, dtype=np.int64).reshape(height, width)
    owner = np.where(markers & foreground, index, _NONE)
    edges = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    corners = [(-1, -1), (-1, 1), (1, -1), (1, 1)]
    for step in range(reach):
        shifts = edges + corners if step % 2 == 0 else edges
        padded = np.pad(owner, 1, constant_values=_NONE)
        best = np.full((height, width), _NONE, np.int64)
        for dr, dc in shifts:
            best = np.minimum(best, padded[1 + dr : 1 + dr + height, 1 + dc : 1 + dc + width])
        reached = foreground & (owner == _NONE) & (best < _NONE)
        owner = np.where(reached, best, owner)
    return np.where(owner == _NONE, -1, owner).astype(np.int32)


def plain_labels(labels: np.ndarray, markers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Marker components per class, numbered by first pixel with ``numpy.unique``."""
    components = np.zeros(labels.shape, np.int64)
    count = 0
    for cid in np.unique(labels[markers]):
        found, n = ndimage.label(markers & (labels == cid), structure=np.ones((3, 3), bool))
        components[found > 0] = found[found > 0] + count
        count += n
    present, first = np.unique(components.ravel(), return_index=True)
    first, present = first[present > 0], present[present > 0]
    order = np.argsort(first)
    rank = np.zeros(count + 1, np.int64)
    rank[present[order]] = np.arange(1, len(order) + 1)
    classes = np.zeros(count + 1, np.int64)
    classes[1:] = labels.ravel()[np.sort(first)]
    return rank[components], classes


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 100_000),
    height=st.integers(1, 40),
    width=st.integers(1, 40),
    fill=st.floats(0.0, 1.0),
    density=st.floats(0.0, 0.3),
    reach=st.integers(1, 9),
)
def test_expansion_equals_the_whole_array_rule(
    seed: int, height: int, width: int, fill: float, density: float, reach: int
) -> None:
    rng = np.random.default_rng(seed)
    foreground = rng.random((height, width)) < fill
    markers = rng.random((height, width)) < density  # some outside the foreground, ignored
    got = expand_markers(foreground, markers, reach)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, plain_expand(foreground, markers, reach))


def test_expansion_keeps_growing_across_an_idle_step() -> None:
    # the second marker's pixel is reached diagonally only (an 8-step), after a 4-step
    fg = np.zeros((4, 4), bool)
    fg[0, 0] = fg[1, 1] = fg[2, 2] = fg[3, 3] = True
    markers = np.zeros((4, 4), bool)
    markers[0, 0] = True
    owner = expand_markers(fg, markers, reach=4)  # 8-steps 0 and 2 reach; 1 and 3 idle
    np.testing.assert_array_equal(owner, plain_expand(fg, markers, 4))
    assert owner[1, 1] == 0 and owner[2, 2] == 0 and owner[3, 3] == -1
    assert expand_markers(fg, markers, reach=5)[3, 3] == 0  # step 4 is an 8-step again


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 100_000),
    size=st.tuples(st.integers(1, 40), st.integers(1, 40)),
    classes=st.integers(1, 4),
    density=st.floats(0.0, 1.0),
)
def test_marker_components_equal_the_sorting_definition(
    seed: int, size: tuple[int, int], classes: int, density: float
) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes + 1, size).astype(np.uint8)
    markers = (rng.random(size) < density) & (labels > 0)
    components, ids, first_of = label_markers(labels, markers)
    want_components, want_ids = plain_labels(labels, markers)
    np.testing.assert_array_equal(components, want_components)
    np.testing.assert_array_equal(ids, want_ids)
    present, index = np.unique(components.ravel(), return_index=True)
    np.testing.assert_array_equal(first_of[present[present > 0]], index[present > 0])
    for band in (1, 7, 1 << 22):  # one row at a time, a few rows, all at once
        first = first_pixels(components, int(components.max()), band_pixels=band)
        np.testing.assert_array_equal(first[present[present > 0]], index[present > 0])
        assert (first[0] == -1) and len(first) == int(components.max()) + 1


@settings(deadline=None)  # a loaded machine can stall any example past the 200 ms default
@given(
    labels=st.lists(st.integers(0, 255), min_size=1, max_size=50),
    classes=st.lists(st.integers(0, 300), max_size=5),
    dtype=st.sampled_from([np.uint8, np.uint16, np.int32]),
)
def test_class_mask_equals_isin(labels: list[int], classes: list[int], dtype: type) -> None:
    array = np.asarray(labels, dtype=dtype)
    np.testing.assert_array_equal(class_mask(array, classes), np.isin(array, classes))
