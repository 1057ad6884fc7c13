"""Test hook: a storage node fails, or dies (SIGKILL), on its Nth shard write and every one
after, so an integration test can fail a write's target exactly mid-write instead of racing
a kill (tests/integration/test_write_spares.py).

$TESSERA_TEST_NODE_FAULT=NODE_ID:N:MODE[,NODE_ID:N:MODE...] (one fault per node), MODE one of
- `fail`: the node refuses that shard write and every later one (500), while it still
  answers its health probe (a node that looks up but cannot write: a full or broken disk);
- `die`: the node SIGKILLs itself when that shard write arrives (its request unanswered).
Counted over streamed, whole and batched shard puts alike. Read once at import; without
the variable `shard_put` is one comparison.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

ENV = "TESSERA_TEST_NODE_FAULT"
MODES = ("fail", "die")


@dataclass
class _Fault:
    node: str
    nth: int
    mode: str
    seen: int = 0


def _parse(value: str) -> _Fault | None:
    node, _, rest = value.partition(":")
    nth, _, mode = rest.partition(":")
    if not node or not nth.isdigit() or int(nth) < 1 or mode not in MODES:
        return None
    return _Fault(node, int(nth), mode)


_FAULTS = {f.node: f for f in map(_parse, os.environ.get(ENV, "").split(",")) if f}


def shard_put(node_id: str) -> str | None:
    """Count one shard write on node `node_id`: the reason to refuse it when the environment
    says this node fails from here on (or SIGKILL this process when it says it dies)."""
    f = _FAULTS.get(node_id) if _FAULTS else None
    if f is None:
        return None
    f.seen += 1
    if f.seen < f.nth:
        return None
    if f.mode == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    return f"shard write {f.seen} refused ({ENV})"
