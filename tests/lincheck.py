"""A linearizability checker for a history of operations on registers (one per key).

Wing and Gong's search with Lowe's memo of (linearized set, state) pairs: each key's history
is checked alone (linearizability is compositional). An operation is a write of a value
(`None` = delete), or a read that saw a value (`None` = absent); one whose outcome is unknown
(a timeout, a 5xx: it may or may not have taken effect) has `end = inf` and, for a write, may
also never take effect. Written for the multi-gateway tests; small enough to read whole.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass


@dataclass(frozen=True)
class Op:
    key: str
    kind: str  # "w" (write, value None = delete) or "r" (read, value None = absent)
    value: bytes | None
    start: float
    end: float = math.inf  # inf: no answer (a write that may or may not have applied)
    client: str = ""


def check(history: list[Op], initial: bytes | None = None) -> dict[str, list[Op]]:
    """Keys whose history is not linearizable, with that history (empty: all are)."""
    per_key: dict[str, list[Op]] = defaultdict(list)
    for op in history:
        if op.kind == "r" and op.end == math.inf:
            continue  # a read that never answered constrains nothing
        per_key[op.key].append(op)
    return {k: ops for k, ops in per_key.items() if not _linearizable(ops, initial)}


def _linearizable(ops: list[Op], initial: bytes | None) -> bool:
    # a write that never answered and whose value no read saw may be taken never to have
    # applied: any order placing it still fits without it (no read between it and the next
    # write saw its value). Dropping them keeps the search from trying each subset of them.
    seen_values = {o.value for o in ops if o.kind == "r"}
    ops = [o for o in ops if not (o.kind == "w" and o.end == math.inf
                                  and o.value not in seen_values)]
    ops = sorted(ops, key=lambda o: o.start)
    n = len(ops)
    unknown = frozenset(i for i, o in enumerate(ops) if o.end == math.inf)
    seen: set[tuple[frozenset[int], bytes | None]] = set()
    stack: list[tuple[frozenset[int], bytes | None]] = [(frozenset(), initial)]
    while stack:
        done, state = stack.pop()
        if len(done | unknown) == n:
            return True  # every answered op placed; unanswered writes may never apply
        if (done, state) in seen:
            continue
        seen.add((done, state))
        # the earliest answer among ops not placed: nothing starting after it may go first
        horizon = min(o.end for i, o in enumerate(ops) if i not in done)
        for i, o in enumerate(ops):
            if i in done or o.start > horizon:
                continue
            if o.kind == "w":
                stack.append((done | {i}, o.value))
            elif o.value == state:
                stack.append((done | {i}, state))
    return False
