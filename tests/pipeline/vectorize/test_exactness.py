"""Chunked tracing equals rasterio.features.shapes on the whole raster, polygon by polygon."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pipeline.vectorize import merge_border_pieces, trace_chunk

from .helpers import assert_same, blobs, checkerboard, chunked, lines, rings, spiral

STRUCTURED = {
    "blobs": lambda: blobs((60, 75), seed=3, sigma=2.5),
    "checkerboard": lambda: checkerboard((23, 31)),
    "one-pixel-lines": lambda: lines((40, 50)),
    "rings-holes-across-borders": lambda: rings((48, 52)),
    "spiral-many-chunks": lambda: spiral((45, 60)),
    "three-classes": lambda: blobs((64, 64), seed=7, classes=3, sigma=1.5),
}


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("chunk", [7, 16, 37])
@pytest.mark.parametrize("name", list(STRUCTURED))
def test_structured_rasters_equal_whole_raster_trace(
    name: str, chunk: int, connectivity: int
) -> None:
    labels = STRUCTURED[name]()
    got = chunked(labels, chunk, connectivity)
    assert_same(labels, got, connectivity)


def test_chunk_larger_than_raster_and_empty_raster() -> None:
    labels = blobs((20, 30), seed=1)
    assert_same(labels, chunked(labels, 1000, 4), 4)
    assert chunked(np.zeros((10, 10), np.uint8), 4, 4) == {}


def test_objects_spanning_chunks_are_merged() -> None:
    labels = spiral((45, 60))
    got = chunked(labels, 8, 4)
    assert len(got) == 1  # one snake across ~40 chunks


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    labels=arrays(
        np.uint8, st.tuples(st.integers(1, 20), st.integers(1, 20)), elements=st.integers(0, 3)
    ),
    chunk=st.integers(2, 9),
    connectivity=st.sampled_from([4, 8]),
)
def test_random_rasters_equal_whole_raster_trace(
    labels: np.ndarray, chunk: int, connectivity: int
) -> None:
    assert_same(labels, chunked(labels, chunk, connectivity), connectivity)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), chunk=st.integers(3, 17), connectivity=st.sampled_from([4, 8]))
def test_random_blobs_with_probabilities(seed: int, chunk: int, connectivity: int) -> None:
    """The component path (with probabilities) gives the same polygons and exact means."""
    labels = blobs((30, 34), seed=seed, classes=2, sigma=1.2)
    probs = np.random.default_rng(seed).random((3, *labels.shape)).astype(np.float32)
    pieces = []
    for r in range(0, labels.shape[0], chunk):
        for c in range(0, labels.shape[1], chunk):
            t = trace_chunk(
                labels[r : r + chunk, c : c + chunk],
                row_off=r,
                col_off=c,
                shape=labels.shape,
                connectivity=connectivity,
                probabilities=probs[:, r : r + chunk, c : c + chunk],
                channel_of={1: 1, 2: 2},
            )
            pieces.append((len(pieces), t))
    border = [(i, t.subset(t.border)) for i, t in pieces]
    merged = merge_border_pieces(
        np.concatenate([t.geometry for _, t in border]),
        np.concatenate([t.class_id for _, t in border]),
        np.concatenate([np.full(len(t.geometry), i) for i, t in border]),
        np.concatenate([t.pixels for _, t in border]),
        np.concatenate([t.prob_sum for _, t in border]),
        connectivity=connectivity,
    )
    interior = [t.subset(~t.border) for _, t in pieces]
    geoms = np.concatenate([merged.geometry, *[t.geometry for t in interior]])
    cls = np.concatenate([merged.class_id, *[t.class_id for t in interior]])
    px = np.concatenate([merged.pixels, *[t.pixels for t in interior]])
    ps = np.concatenate([merged.prob_sum, *[t.prob_sum for t in interior]])
    from scipy import ndimage

    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    expected = {}
    for cid in (1, 2):
        lab, n = ndimage.label(labels == cid, structure)
        for k in range(1, n + 1):
            sel = lab == k
            key = (cid, int(sel.sum()))
            expected.setdefault(key, []).append(float(probs[cid][sel].sum()))
    assert len(geoms) == sum(len(v) for v in expected.values())
    for g, c, n, s in zip(geoms, cls, px, ps, strict=True):
        assert g.area == n
        assert any(abs(s - e) < 1e-6 * max(1.0, e) for e in expected[(int(c), int(n))])
