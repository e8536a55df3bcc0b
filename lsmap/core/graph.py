"""Pure: connected components of items joined by pairs (scipy's sparse-graph components).

Vectorising joins the pieces of a landslide cut by block borders, and regional merging joins
polygons of overlapping scenes; both are components of a graph given as pairs of item numbers.
"""

from __future__ import annotations

import numpy as np


def components(n: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Component label of each of ``n`` items joined (transitively) by the pairs ``(left[k], right[k])``.

    Labels are ``0..k-1``, numbered in the order of each component's smallest item, so the result
    does not depend on the order of the pairs.

    Shape:
        ``left``, ``right``: ``(m,)`` integers in ``[0, n)``; returns ``(n,)`` int64.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if n == 0:
        return np.zeros(0, np.int64)
    left, right = np.asarray(left, np.int64), np.asarray(right, np.int64)
    graph = coo_matrix((np.ones(len(left), np.int8), (left, right)), shape=(n, n))
    k, labels = connected_components(graph, directed=False)
    first = np.full(k, n, np.int64)
    np.minimum.at(first, labels, np.arange(n))
    rank = np.empty(k, np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(k)
    return rank[labels]


def groups(labels: np.ndarray) -> list[list[int]]:
    """The items of each component, in item order (``labels`` from :func:`components`)."""
    labels = np.asarray(labels)
    if not len(labels):
        return []
    order = np.argsort(labels, kind="stable")
    cuts = np.flatnonzero(np.diff(labels[order])) + 1
    return [part.tolist() for part in np.split(order, cuts)]
