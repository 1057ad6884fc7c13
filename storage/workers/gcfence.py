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
  the copy W wrote survives. A delete reported failed may still be running (a client that
  timed out does not stop the node's unlink), so it has not ended: its copies stay pending,
  carried to the claimer's retry entry in the transaction that queues it (`settle`), until
  a later delete of them is known finished.
- C after R, before T: T sees c claimed above its token's generation: refused.
- C after T: T changed the manifest records C compares (or the check before C already saw
  c named and skipped it): C fails, and the deleter re-reads and skips c.
A claimer that dies leaves its copies pending (repair of those copies waits) until its queue
entry, still queued, runs again: the entry is retired only with the pending mark.

The fence of a stripe with no X entry is deleted with its entry: no commit can name a copy
of it (a commit needs a live manifest, and stripe ids are never reused).

Reclaiming the fence of a live stripe (else every repaired or moved stripe keeps one for
good): a fence with nothing pending whose last claim (`at`, the claimer's clock) is older
than `RECLAIM_AFTER_S` by the reclaimer's clock is deleted (`reclaim`: the collector scans
the fences a page at a time while idle). Deleting it would restart the generation
under a reader that read it earlier, so every fence carries a random `epoch`, chosen by the
claim that creates it, and a commit is also refused when (a) its token saw a fence and the
fence at commit is not that one (another epoch, or none), or (b) its token is older than
`MAX_TOKEN_AGE_S` (monotonic clock). Proof that a claim C of c after R still refuses T:
- R saw fence E: if E is still there at T's fence read F, C's claim on c is in E (had E
  gone in between, it could not come back: epochs are random), so above the token's
  generation (a claim only raises it within E); if E is gone at F, rule (a).
- R saw none: C's claim is in a fence made after R, so c's claim there is at generation 1
  or more, above the token's 0. If that fence is there at F, refused; if not, it was
  reclaimed at D (nothing pending, its last claim old), and D - C >= RECLAIM_AFTER_S - skew
  >= MAX_TOKEN_AGE_S (clocks of two gateways differ by less than RECLAIM_AFTER_S -
  MAX_TOKEN_AGE_S, an hour), so F - R > D - C >= MAX_TOKEN_AGE_S: rule (b).
And T's transaction compares the fence's revision as read at F (0: absent), so no claim or
reclaim lands between F and T. A fence written by older code has no `at` and is kept.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

from storage.keyspace import GC_FENCE, gc_fence_key, next_key, space
from storage.metadata import Item, MetadataStore, Txn
from storage.records import pack, unpack

SETTLE_TRIES = 50  # a settle conflicts only with another claim on the same stripe
MAX_TOKEN_AGE_S = 3600.0  # a commit whose fence token is older is refused (docstring)
RECLAIM_AFTER_S = 2 * 3600.0  # a settled fence is deleted once its last claim is this old
RECLAIM_PAGE = 256  # fences read per reclaim step


def copy_name(index: int, node: str) -> str:
    return f"{index}/{node}"


@dataclass
class Fence:
    """A stripe's fence as read (all empty, revision 0, while it has none)."""

    gen: int = 0
    claims: dict[str, int] = field(default_factory=dict)  # copy -> generation of its last claim
    pending: dict[str, list[str]] = field(default_factory=dict)  # claimer -> copies
    epoch: str = ""  # chosen by the claim that created it ("" before epochs)
    at: int = 0  # the last claim's wall-clock time, ns (0: unknown, never reclaimed)
    revision: int = 0
    read_at: float = field(default_factory=time.monotonic)  # when read (a token's age)

    def pack(self) -> bytes:
        return pack({"gen": self.gen, "claims": self.claims, "pending": self.pending,
                     "epoch": self.epoch, "at": self.at})

    def pending_copies(self) -> set[str]:
        """Every copy some claimer has not yet settled (its delete may be under way)."""
        return {c for copies in self.pending.values() for c in copies}


async def read_fence(meta: MetadataStore, stripe_id: bytes) -> Fence:
    item = await meta.get(gc_fence_key(stripe_id))
    return Fence() if item is None else _decode(item)


def _decode(item: Item) -> Fence:
    r = unpack(item.value)
    return Fence(gen=int(r["gen"]), claims={str(k): int(v) for k, v in r["claims"].items()},
                 pending={str(k): [str(c) for c in v] for k, v in r["pending"].items()},
                 epoch=str(r.get("epoch", "")), at=int(r.get("at", 0)), revision=item.revision)


def refused(token: Fence, now: Fence, written: dict[int, str]) -> set[int]:
    """The written copies (index -> node) a commit must give up (module docstring)."""
    if time.monotonic() - token.read_at > MAX_TOKEN_AGE_S or \
            (token.revision and now.epoch != token.epoch):
        return set(written)
    was_pending = token.pending_copies()
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
    f.epoch = f.epoch if f.revision else secrets.token_hex(8)
    f.at = time.time_ns()
    copies = [copy_name(i, n) for i, n in enumerate(nodes) if n]
    for c in copies:
        f.claims[c] = f.gen
    f.pending[owner] = copies
    key = gc_fence_key(stripe_id)
    return await meta.txn(Txn(compares={**compares, key: f.revision}, puts={key: f.pack()}))


async def settle(meta: MetadataStore, stripe_id: bytes, owner: str, done: Txn,
                 indexed: bool, carry: tuple[str, list[str]] | None = None) -> bool:
    """Apply `done` (the claimer retiring or requeueing its entry) with `owner`'s pending
    mark dropped, and `carry` (retry entry, copies whose delete failed) marked pending in
    its place; for a stripe no longer `indexed`, delete the fence with it. False if
    `done.compares` no longer held (another collector settled the entry first)."""
    key = gc_fence_key(stripe_id)
    if not indexed:
        return await meta.txn(Txn(compares=done.compares, puts=done.puts,
                                  deletes=(*done.deletes, key)))
    for _ in range(SETTLE_TRIES):
        f = await read_fence(meta, stripe_id)
        if owner not in f.pending and not carry:
            return await meta.txn(done)
        f.pending.pop(owner, None)
        if carry:
            f.pending[carry[0]] = carry[1]
        if await meta.txn(Txn(compares={**done.compares, key: f.revision},
                              puts={**done.puts, key: f.pack()}, deletes=done.deletes)):
            return True
        for k, rev in done.compares.items():
            item = await meta.get(k)
            if (item.revision if item else 0) != rev:
                return False
    raise RuntimeError(f"stripe {stripe_id.hex()}: fence kept changing")  # entry stays queued


async def reclaim(meta: MetadataStore, start: bytes) -> tuple[bytes, int]:
    """Delete the fences from `start` on (one page) that have nothing pending and whose last
    claim is `RECLAIM_AFTER_S` old (module docstring); (where the next page starts, the
    first fence again after the last page; fences deleted)."""
    items = await meta.range(start, space(GC_FENCE)[1], limit=RECLAIM_PAGE)
    old = time.time_ns() - int(RECLAIM_AFTER_S * 1e9)
    deleted = 0
    for item in items:
        f = _decode(item)
        if not f.pending and 0 < f.at <= old:  # a change meanwhile: kept, seen next pass
            deleted += await meta.txn(Txn(compares={item.key: item.revision},
                                          deletes=(item.key,)))
    nxt = next_key(items[-1].key) if len(items) == RECLAIM_PAGE else space(GC_FENCE)[0]
    return nxt, deleted
