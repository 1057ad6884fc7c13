"""The collection fence of a stripe: a delete of a shard copy and a commit naming that copy
never both succeed (the window review12b #1's fix left open: a commit landing after the
collector's manifest check named a copy the collector then deleted).

Shard files are named by (stripe, index), so a repair or a move that writes shard i to node
N rewrites the very file a queued delete of (i, N) removes. So every delete of a copy of an
indexed stripe (one with an X entry) first claims it, and every commit checks the claims:

- claim (`claim`): one transaction that compares the records the deleter checked (the X
  entry, the manifest records that do not name the copy) and the fence (GF, stripe), bumps
  the fence's generation, records each copy's claim at that generation and marks the copies
  pending under the claimer's name (its queue entry); the copies are deleted after it, and
  `settle` drops the pending mark in the transaction that retires the claimer's entry.
- token (`read_fence`): a writer reads the fence before it writes any shard.
- commit (`refused`): a commit gives up every written copy that was pending when its token
  was read, or that was claimed at a generation above the token's; and its transaction
  compares the fence's revision, so no claim lands between that check and the commit.

Why no committed copy is deleted: take a delete D of copy c (claim C before it, pending until
after it) and a commit T naming c whose shard write W follows its token read R.
- C before R: if D is still pending at R, T is refused; if not, D ended before R < W, and
  the copy W wrote survives.
- C after R, before T: T sees c claimed above its token's generation: refused.
- C after T: T changed the manifest records C compares (or the check before C already saw
  c named and skipped it): C fails, and the deleter re-reads and skips c.
A claimer that dies leaves its copies pending (repair of those copies waits) until its queue
entry, still queued, runs again: the entry is retired only with the pending mark.

The fence of a stripe with no X entry is deleted with its entry: no commit can name a copy
of it (a commit needs a live manifest, and stripe ids are never reused).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from storage.keyspace import gc_fence_key
from storage.metadata import MetadataStore, Txn
from storage.records import pack, unpack

SETTLE_TRIES = 50  # a settle conflicts only with another claim on the same stripe


def copy_name(index: int, node: str) -> str:
    return f"{index}/{node}"


@dataclass
class Fence:
    """A stripe's fence as read (all empty, revision 0, while it has none)."""

    gen: int = 0
    claims: dict[str, int] = field(default_factory=dict)  # copy -> generation of its last claim
    pending: dict[str, list[str]] = field(default_factory=dict)  # claimer -> copies
    revision: int = 0

    def pack(self) -> bytes:
        return pack({"gen": self.gen, "claims": self.claims, "pending": self.pending})


async def read_fence(meta: MetadataStore, stripe_id: bytes) -> Fence:
    item = await meta.get(gc_fence_key(stripe_id))
    if item is None:
        return Fence()
    r = unpack(item.value)
    return Fence(gen=int(r["gen"]), claims={str(k): int(v) for k, v in r["claims"].items()},
                 pending={str(k): [str(c) for c in v] for k, v in r["pending"].items()},
                 revision=item.revision)


def refused(token: Fence, now: Fence, written: dict[int, str]) -> set[int]:
    """The written copies (index -> node) a commit must give up (module docstring)."""
    was_pending = {c for copies in token.pending.values() for c in copies}
    out = set()
    for i, node in written.items():
        c = copy_name(i, node)
        if c in was_pending or now.claims.get(c, 0) > token.gen:
            out.add(i)
    return out


async def claim(meta: MetadataStore, stripe_id: bytes, owner: str, nodes: list[str | None],
                compares: dict[bytes, int]) -> bool:
    """Claim the copies `nodes` (index -> node or None) for deletion by `owner`, if the
    records in `compares` are unchanged; False: something changed, check again."""
    f = await read_fence(meta, stripe_id)
    f.gen += 1
    copies = [copy_name(i, n) for i, n in enumerate(nodes) if n]
    for c in copies:
        f.claims[c] = f.gen
    f.pending[owner] = copies
    key = gc_fence_key(stripe_id)
    return await meta.txn(Txn(compares={**compares, key: f.revision}, puts={key: f.pack()}))


async def settle(meta: MetadataStore, stripe_id: bytes, owner: str, done: Txn,
                 indexed: bool) -> None:
    """Apply `done` (the claimer retiring or requeueing its entry) with `owner`'s pending
    mark dropped; for a stripe no longer `indexed`, delete the fence with it."""
    key = gc_fence_key(stripe_id)
    if not indexed:
        await meta.txn(Txn(compares=done.compares, puts=done.puts,
                           deletes=(*done.deletes, key)))
        return
    for _ in range(SETTLE_TRIES):
        f = await read_fence(meta, stripe_id)
        if owner not in f.pending:
            await meta.txn(done)
            return
        del f.pending[owner]
        if await meta.txn(Txn(compares={**done.compares, key: f.revision},
                              puts={**done.puts, key: f.pack()}, deletes=done.deletes)):
            return
    raise RuntimeError(f"stripe {stripe_id.hex()}: fence kept changing")  # entry stays queued
