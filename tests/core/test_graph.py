"""Connected components of paired items: against a plain union-find, in any pair order."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from lsmap.core.graph import components, groups


def union_find_groups(n, pairs):
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            i = parent[i]
        return i

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    out: dict[int, list[int]] = {}
    for i in range(n):
        out.setdefault(find(i), []).append(i)
    return list(out.values())


@settings(deadline=None)
@given(st.integers(0, 30).flatmap(lambda n: st.tuples(
    st.just(n), st.lists(st.tuples(st.integers(0, max(n - 1, 0)), st.integers(0, max(n - 1, 0))),
                         max_size=40 if n else 0))))
def test_components_match_a_union_find_in_smallest_item_order(case):
    """The groups equal a union-find's, listed by their smallest item, whatever the pair order."""
    n, pairs = case
    left = np.array([a for a, _ in pairs], np.int64)
    right = np.array([b for _, b in pairs], np.int64)
    labels = components(n, left, right)
    assert groups(labels) == union_find_groups(n, pairs)
    assert groups(components(n, right[::-1], left[::-1])) == union_find_groups(n, pairs)


def test_no_pairs_no_items():
    assert groups(components(0, np.array([]), np.array([]))) == []
    assert groups(components(3, np.array([]), np.array([]))) == [[0], [1], [2]]
