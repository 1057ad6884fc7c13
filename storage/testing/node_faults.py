"""Test hook: a storage node fails, or dies (SIGKILL), on its Nth shard write and every one
after, so an integration test can fail a write's target exactly mid-write instead of racing
a kill (tests/integration/test_write_spares.py).

$TESSERA_TEST_NODE_FAULT=NODE_ID:N:MODE[,NODE_ID:N:MODE...] (one fault per node), MODE one of
- `fail`: the node refuses that shard write and every later one (500), while it still
  answers its health probe (a node that looks up but cannot write: a full or broken disk);
- `die`: the node SIGKILLs itself when that shard write arrives (its request unanswered).
Counted over streamed, whole and batched shard puts alike. Read once at import, strictly
(`parse`: a malformed or repeated entry stops the node's start); without the variable
`shard_put` is one comparison.
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


def parse(value: str) -> dict[str, _Fault]:
    """The faults `value` (the variable's text) names, by node id; raises ValueError on an
    entry that is malformed or names a node twice (blanks around entries are stripped): a
    typo would otherwise run a fault test with no fault, a test that cannot fail."""
    faults: dict[str, _Fault] = {}
    if not value.strip():
        return faults
    for entry in value.split(","):
        node, _, rest = entry.strip().partition(":")
        nth, _, mode = rest.partition(":")
        if not node or not nth.isdigit() or int(nth) < 1 or mode not in MODES:
            raise ValueError(f"${ENV}: {entry.strip()!r} is not NODE_ID:N:MODE (N >= 1, "
                             f"MODE one of {', '.join(MODES)})")
        if node in faults:
            raise ValueError(f"${ENV}: node {node!r} named twice (one fault per node)")
        faults[node] = _Fault(node, int(nth), mode)
    return faults


_FAULTS = parse(os.environ.get(ENV, ""))


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
