"""Join polygon pieces across chunk borders (pure computation).

Two border pieces belong to one polygon when they have the same class, come from different
chunks, and share an edge of positive length (4-connectivity) or any point (8-connectivity:
edges or corners). This is exactly the rule the whole-raster trace applies to pixels: pieces
of one chunk are already separate components, and pieces meet only on seams, where two
pixels across a seam share an edge exactly when their pieces share a segment of that seam.
Coordinates are integer pixel corners, so the tests are exact.

Candidates come from an STRtree over the pieces' envelopes; the accepted pairs are joined
with union-find (connected components of a sparse graph) and each group with ``union_all``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely

__all__ = ["MergedPieces", "merge_border_pieces"]


@dataclass
class MergedPieces:
    """Result of the seam merge.

    Attributes
    ----------
    geometry
        One (Multi)Polygon per group, in global pixel coordinates.
    class_id, pixels, prob_sum
        Per group: class, summed pixel counts and probability sums.
    pieces
        Number of pieces in each group.
    group
        The group of each input piece (index into the fields above).
    """

    geometry: np.ndarray
    class_id: np.ndarray
    pixels: np.ndarray
    prob_sum: np.ndarray | None
    pieces: np.ndarray
    group: np.ndarray


def _pairs(
    geometry: np.ndarray, class_id: np.ndarray, chunk_id: np.ndarray, connectivity: int
) -> tuple[np.ndarray, np.ndarray]:
    tree = shapely.STRtree(geometry)
    left, right = tree.query(geometry, predicate="intersects")
    keep = (
        (left < right) & (class_id[left] == class_id[right]) & (chunk_id[left] != chunk_id[right])
    )
    left, right = left[keep], right[keep]
    if connectivity == 4 and len(left):
        shared = shapely.intersection(geometry[left], geometry[right])
        edge = shapely.length(shared) > 0
        left, right = left[edge], right[edge]
    return left, right


def merge_border_pieces(
    geometry: np.ndarray,
    class_id: np.ndarray,
    chunk_id: np.ndarray,
    pixels: np.ndarray,
    prob_sum: np.ndarray | None,
    *,
    connectivity: int = 4,
) -> MergedPieces:
    """Merge border pieces that continue across chunk seams.

    Parameters
    ----------
    geometry
        Pieces (global pixel coordinates) that reach an internal chunk border.
    class_id, chunk_id
        Class and chunk index of each piece.
    pixels, prob_sum
        Pixel count and probability sum of each piece (``prob_sum`` may be ``None``).
    connectivity
        4 or 8, the trace's connectivity.

    Returns
    -------
    MergedPieces
        One entry per connected group, in the order of each group's first piece.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(geometry)
    if n == 0:
        empty = np.empty(0, object)
        none = np.empty(0, np.int64)
        return MergedPieces(
            empty, none, none, None if prob_sum is None else np.empty(0), none, none
        )
    left, right = _pairs(geometry, class_id, chunk_id, connectivity)
    graph = coo_matrix((np.ones(len(left), np.int8), (left, right)), shape=(n, n))
    _, group = connected_components(graph, directed=False)
    # renumber groups in order of first appearance, for a deterministic output order
    _, first, inverse = np.unique(group, return_index=True, return_inverse=True)
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    group = rank[inverse]
    count = len(order)
    sizes = np.bincount(group, minlength=count)
    merged = np.empty(count, object)
    singles = sizes[group] == 1
    merged[group[singles]] = geometry[singles]
    multi = np.flatnonzero(sizes > 1)
    if len(multi):
        by_group = np.argsort(group, kind="stable")
        starts = np.concatenate([[0], np.cumsum(sizes)])
        for g in multi:
            members = by_group[starts[g] : starts[g + 1]]
            merged[g] = shapely.union_all(geometry[members])
    first_piece = np.empty(count, np.int64)
    first_piece[group[::-1]] = np.arange(n)[::-1]
    return MergedPieces(
        geometry=merged,
        class_id=class_id[first_piece],
        pixels=np.bincount(group, weights=pixels, minlength=count).astype(np.int64),
        prob_sum=None
        if prob_sum is None
        else np.bincount(group, weights=prob_sum, minlength=count),
        pieces=sizes,
        group=group,
    )
