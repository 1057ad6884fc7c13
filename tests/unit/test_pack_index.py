"""The compact pack index (nodes.packindex) against a dict: lookups, sets, deletes, merges
(forced small), id-order iteration and listing pages after any id."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodes.packindex import PackIndex, PackLoc, key_of, sid_of

sids = st.builds(lambda s, i: f"{s:032x}.{i}", st.integers(0, 40), st.integers(0, 255))
locs = st.builds(PackLoc, st.integers(0, (1 << 32) - 1), st.integers(0, (1 << 64) - 1),
                 st.integers(0, (1 << 32) - 1), st.integers(0, (1 << 64) - 1))
ops = st.lists(st.tuples(st.booleans(), sids, locs), max_size=120)


@given(st.lists(sids, unique=True))
def test_keys_sort_as_the_ids_do(ids: list[str]) -> None:
    assert sorted(ids) == [sid_of(k) for k in sorted(key_of(s) for s in ids)]


@pytest.mark.parametrize("merge_min", [1, 3, 4096])
@settings(max_examples=60, deadline=None)
@given(ops=ops, after=st.one_of(st.just(""), sids), limit=st.integers(0, 30))
def test_matches_a_dict(merge_min: int, ops: list[tuple[bool, str, PackLoc]], after: str,
                        limit: int) -> None:
    idx, model = PackIndex(merge_min), {}

    def apply(some: list[tuple[bool, str, PackLoc]]) -> None:
        for put, sid, loc in some:
            if put:
                idx[sid] = model[sid] = loc
            else:
                assert idx.pop(sid, None) == model.pop(sid, None)
            assert len(idx) == len(model)
    with idx.bulk():  # a restart's load: the first half
        apply(ops[:len(ops) // 2])
    apply(ops[len(ops) // 2:])
    assert dict(idx) == model and list(idx) == sorted(model)
    assert idx.total_length() == sum(loc.length for loc in model.values())
    assert all(idx.get(sid) == model.get(sid) and (sid in idx) == (sid in model)
               for _, sid, _ in ops)
    assert idx.after(after, limit) == sorted(s for s in model if s > after)[:limit]
    idx.merge()
    assert dict(idx) == model and idx.after(after, limit) == \
        sorted(s for s in model if s > after)[:limit]
