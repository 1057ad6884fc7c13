"""Deferred repair entries become due when the cluster's nodes change (RepairWorker._due):
when a node returns (it may be the zone-safe place an entry waited for) and, since session
8, when a node goes down or out (an entry deferred because the shard sent to that node
failed is placed elsewhere at once, not RETRY_S later)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from storage.health import DOWN, OUT, UP
from storage.keyspace import STRIPE, space
from storage.workers.repair import RETRY_S, RepairWorker


def _worker(states: dict[str, str]) -> RepairWorker:
    w = RepairWorker.__new__(RepairWorker)  # only the state _note_returns and _due use
    w._states = dict(states)
    w._changed_at = 0.0
    w._health = SimpleNamespace(states={n: SimpleNamespace(state=s, started=0.0) for n, s in states.items()})
    w._sweep_cursor = space(STRIPE)[0]
    w._next_sweep = 1e18
    w._sweep_again = False
    w._seen_out = set()
    w._fresh = {}
    return w


def _deferred(ago_s: float) -> dict[str, float]:
    at = time.time() - ago_s
    return {"retry_at": at + RETRY_S, "deferred_at": at}


@pytest.mark.parametrize("to", [DOWN, OUT])
def test_a_node_going_down_makes_deferred_entries_due(to: str) -> None:
    w = _worker({"n1": UP, "n2": UP})
    entry = _deferred(1.0)
    w._note_returns()
    assert not w._due(entry, time.time())  # nothing changed: it waits RETRY_S
    w._health.states["n2"].state = to
    w._note_returns()
    assert w._due(entry, time.time())
    assert w._next_sweep == 1e18  # a node going down starts no sweep by itself
    later = _deferred(0.0)  # deferred after the change: waits again
    assert not w._due(later, time.time() + 1)


def test_a_node_returning_makes_them_due_and_sweeps_now() -> None:
    w = _worker({"n1": UP, "n2": DOWN})
    entry = _deferred(1.0)
    w._note_returns()
    assert not w._due(entry, time.time())
    w._health.states["n2"].state = UP
    w._note_returns()
    assert w._due(entry, time.time()) and w._next_sweep == 0.0
