"""The manifest of a stripe: every metadata record naming its shards (an object version's
O/ and V/ records, a block-volume extent's VX/ pointer, or an open multipart upload's part
record with its upload record), how repair, the rebalancer and
the deep scrub find it (`load_manifest`), and how they move its shards (`commit_shard_moves`:
compare-and-swap on every record, or the new copies go to garbage collection).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from storage import commit_nodes
from storage.config import Config
from storage.errors import NodeRemoved
from storage.health import HealthTracker
from storage.keyspace import (
    EXTENT,
    gc_fence_key,
    gc_key,
    next_key,
    object_key,
    part_key,
    space,
    span,
    stripe_index_key,
    upload_key,
    version_prefix,
)
from storage.metadata import Item, MetadataStore, Txn
from storage.metadata.fence import LeaseFenced
from storage.multipart_records import Part
from storage.records import ObjectVersion, PartLayout, pack, unpack
from storage.workers.gcfence import Fence, read_fence, refused

COMMIT_TRIES = 24  # CAS attempts of one commit while its stripe's nodes stay unchanged
COMMIT_JITTER_S = 0.02  # the first retry's pause (at most; random), doubling up to ...
COMMIT_JITTER_MAX_S = 0.25  # ... this: all tries take at most ~5 s
# Stripe index states whose shards are kept at k+m (repair, rebalance, status, the deep
# scrub): live stripes, the parts of an upload still open (acknowledged by UploadPart; an
# upload may stay open for hours, and its parts become the object's stripes as they are)
# and the restored copy of an archived version (what its GETs read for days).
KEPT_STATES = ("live", "part", "restored")


class Commit(enum.Enum):
    """How `commit_shard_moves` ended."""

    DONE = "committed"
    GAVE_UP = "gave up"  # the manifest changed or CAS kept conflicting: copies queued for GC
    REFUSED = "refused"  # a collector's delete may meet a written copy: retry once it settled

    def __bool__(self) -> bool:
        return self is Commit.DONE  # as the bool it replaced: committed or not


@dataclass
class Manifest:
    """Every metadata record naming one stripe's shards, and that stripe's layout.

    For an object: the O/ and V/ records of its version. For a block-volume extent: its one
    VX/ pointer (`kind` "extent"). For a restored copy of an archived version (`kind`
    "restored"): the version's records, the layout from its `restore` parts. For a part of
    an open upload (`kind` "part"): its part
    record, then its upload record (a move rewrites the latter unchanged, so a completion
    that read the part's old nodes fails its compare and reads the part again).
    """

    items: list[Item]
    part: PartLayout
    kind: str = "object"


def _extent_layout(raw: bytes) -> PartLayout:
    p = unpack(raw)
    return PartLayout(number=int(p["index"]), size=int(p["size"]), etag="",
                      stripe_id=bytes(p["stripe"]), k=int(p["k"]), m=int(p["m"]),
                      segment_size=int(p["segment_size"]), nodes=list(p["nodes"]))


async def load_manifest(meta: MetadataStore, stripe_id: bytes) -> Manifest | None | str:
    """The live manifest of a stripe, None when it has no index entry, else its X/ state
    ("gone" when no record names it; "staging" for an archive copy's entry staged ahead of
    a swap that has not applied yet: `storage/archive_staging.py`)."""
    x = await meta.get(stripe_index_key(stripe_id))
    if x is None:
        return None
    ref = unpack(x.value)
    state = ref.get("state")
    if state == "part":
        man = await _part_manifest(meta, ref, stripe_id)
        if man == "gone":  # completed meanwhile (its X entry now live)? never a false "gone":
            again = await meta.get(stripe_index_key(stripe_id))  # the orphan sweep deletes it
            if again is None or again.revision != x.revision:
                return await load_manifest(meta, stripe_id)
        return man
    if state not in ("live", "restored"):
        return str(state or "unknown")
    if ref.get("kind") == "extent":
        vx = await meta.get(bytes(ref["vx"]))
        if vx is None or bytes(unpack(vx.value).get("stripe") or b"") != stripe_id:
            return "gone"
        return Manifest(items=[vx], part=_extent_layout(vx.value), kind="extent")

    def version() -> Awaitable[Manifest | str]:
        return _version_manifest(meta, ref["bucket"], ref["key"],
                                 lambda v: v.version_id == ref["version"], stripe_id, state)

    man = await version()
    if man == "gone" and ref.get("staging"):  # staged ahead of its swap (archive_staging)
        if await meta.get(bytes(ref["staging"])) is not None:
            return "staging"
        man = await version()  # (the swap may have applied, deleting the marker, meanwhile)
    return man


async def _version_manifest(meta: MetadataStore, bucket: str, key: str,
                            match: Callable[[ObjectVersion], bool], stripe_id: bytes,
                            state: str) -> Manifest | str:
    """The manifest of a stripe of the version of `bucket`/`key` that `match` picks."""
    found: list[tuple[Item, ObjectVersion]] = []

    def take(it: Item) -> None:
        """Keep `it` if it is the version sought: each record decoded once (one of thousands
        of parts takes milliseconds: this runs for each of its stripes), and only the
        matching ones kept decoded (a key's other versions, up to 100,000, are not)."""
        v = ObjectVersion.decode(it.value)
        if match(v):
            found.append((it, v))

    cur = await meta.get(object_key(bucket, key))
    if cur is not None:
        take(cur)
    for it in await meta.range(*span(version_prefix(bucket, key)), limit=100000):
        take(it)
    items = [it for it, _ in found]
    for _, v in found:
        parts = v.parts if state == "live" else restored_parts(v)
        for part in parts:
            if part.stripe_id == stripe_id:
                return Manifest(items=items, part=part,
                                kind="object" if state == "live" else "restored")
    return "gone"


def restored_parts(v: ObjectVersion) -> list[PartLayout]:
    """The layouts of an archived version's restored copy (none while not restored)."""
    return [PartLayout(**p) for p in v.restore.get("parts") or []]


async def _part_manifest(meta: MetadataStore, ref: dict, stripe_id: bytes) -> Manifest | str:
    """The manifest of an open upload's part ("gone" once completed, aborted or replaced).
    A part of a completed upload of more than `retiring.INLINE_PARTS` parts keeps its
    "part" entry: its manifest is then the version that upload made, if any."""
    item = await meta.get(part_key(str(ref["upload"]), int(ref["part"])))
    up = await meta.get(upload_key(str(ref["bucket"]), str(ref["key"]), str(ref["upload"])))
    if up is None:
        return await _version_manifest(meta, str(ref["bucket"]), str(ref["key"]),
                                       lambda v: v.upload_id == ref["upload"], stripe_id,
                                       "live")
    if item is None:
        return "gone"
    part = Part.decode(item.value)
    if part.stripe_id != stripe_id:
        return "gone"
    return Manifest(items=[item, up], part=part.layout(), kind="part")


def _moved(man: Manifest, it: Item, nodes: list[str | None]) -> bytes:
    """Record `it` of `man` with the stripe's shards at `nodes`."""
    if man.kind == "extent":
        pointer = unpack(it.value)
        pointer["nodes"] = nodes
        return pack(pointer)
    if man.kind == "part":
        if it is not man.items[0]:
            return it.value  # the upload record: rewritten as is (a new revision)
        part = Part.decode(it.value)
        part.nodes = list(nodes)
        return part.encode()
    v = ObjectVersion.decode(it.value)
    if man.kind == "restored":
        for r in v.restore.get("parts") or []:
            if bytes(r["stripe_id"]) == man.part.stripe_id:
                r["nodes"] = list(nodes)
        return v.encode()
    for p in v.parts:
        if p.stripe_id == man.part.stripe_id:
            p.nodes = list(nodes)
    return v.encode()


async def volume_stripes(meta: MetadataStore) -> set[bytes]:
    """Stripes referenced by block volume extent pointers (`VX`), which have no `X` entry.

    Memory grows with the number of extents (16 bytes each plus set overhead); a stripe
    index entry written by the volume layer would make this scan unnecessary.
    """
    out: set[bytes] = set()
    start, end = space(EXTENT)
    while True:
        items = await meta.range(start, end, limit=1000)
        for it in items:
            with contextlib.suppress(Exception):
                stripe = unpack(it.value).get("stripe")
                if stripe:
                    out.add(bytes(stripe))
        if len(items) < 1000:
            return out
        start = next_key(items[-1].key)


@dataclass(frozen=True)
class MapGuard:
    """The cluster map a move's targets were chosen on (`storage/commit_nodes.py`): a commit
    naming a target removed from the map since then is refused, as a write's is."""

    cfg: Config
    health: HealthTracker


async def commit_shard_moves(meta: MetadataStore, stripe_id: bytes, old: list[str | None],
                             written: dict[int, str], fence: Fence,
                             guard: MapGuard | None = None) -> tuple[Commit, int]:
    """CAS new shard locations into every record of a stripe's manifest (retry on conflict).

    `old` is the node list the caller based its work on; if the manifest changed meanwhile,
    the new copies are queued for collection and nothing is committed. `fence` is the
    stripe's collection fence as read before any of `written` was written: if a delete may
    have met one of them, nothing is committed either (`storage/workers/gcfence.py`), and
    nothing queued (REFUSED: the caller retries after the delete settles). A CAS conflict while
    this stripe's nodes are unchanged came from another part of the same record (the other
    stripes of a multipart object share one version record): it retries after a short random
    pause (bounded, `COMMIT_TRIES`) rather than throw the rebuild away. Replaced copies are
    queued for GC. A commit the store refused for the worker's lease (LeaseFenced: another
    process holds it now) queues the new copies for collection, as a given-up one does, and
    re-raises. With `guard` (repair and the rebalancer always give it) the commit compares the
    membership epoch, as a write's does: a target removed from the cluster map since it was
    chosen makes it give up (copies queued for collection) instead of naming a node that is
    gone. Returns (how it ended, CAS conflicts met). Repair and the rebalancer share it.
    """
    conflicts = 0
    for attempt in range(COMMIT_TRIES):
        if attempt:
            cap = min(COMMIT_JITTER_MAX_S, COMMIT_JITTER_S * 2 ** min(attempt - 1, 8))
            await asyncio.sleep(random.uniform(0.0, cap))
        man = await load_manifest(meta, stripe_id)
        if not isinstance(man, Manifest) or list(man.part.nodes) != old:
            # Deleted, replaced or repaired by someone else meanwhile: drop our copies.
            await collect_copies(meta, stripe_id, written)
            return Commit.GAVE_UP, conflicts
        now = await read_fence(meta, stripe_id)
        if refused(fence, now, written):
            # A collector's delete may meet these copies: queue none of them (that would
            # only race the retry again); what a delete leaves is an orphan the repair
            # sweep queues once past its grace, if no commit names it by then.
            return Commit.REFUSED, conflicts
        compares: dict[bytes, int] = {gc_fence_key(stripe_id): now.revision}
        if guard is not None:
            try:
                commit_nodes.guard(guard.health, written.values(), compares)
            except NodeRemoved:
                await collect_copies(meta, stripe_id, written)
                return Commit.GAVE_UP, conflicts
        puts: dict[bytes, bytes] = {}
        nodes = list(man.part.nodes) + [None] * (man.part.k + man.part.m - len(man.part.nodes))
        for i, nid in written.items():
            nodes[i] = nid
        for it in man.items:
            puts[it.key] = _moved(man, it, nodes)
            compares[it.key] = it.revision
        replaced = {i: old[i] for i in written
                    if i < len(old) and old[i] is not None and old[i] != written[i]}
        if replaced:  # the lost, corrupt or moved copies, should their node still hold them
            puts[gc_key(time.time_ns(), stripe_id)] = pack(
                {"nodes": [replaced.get(i) for i in range(len(old))]})
        try:
            if await meta.txn(Txn(compares=compares, puts=puts)):
                return Commit.DONE, conflicts
        except LeaseFenced:  # another process holds the worker's lease: nothing applied, and
            await collect_copies(meta, stripe_id, written)  # (an unfenced put) no retry
            raise
        conflicts += 1
        if guard is not None:  # a removal since the map was read: the next try sees it
            await commit_nodes.recheck(meta, guard.cfg, guard.health, compares)
    await collect_copies(meta, stripe_id, written)
    return Commit.GAVE_UP, conflicts


async def collect_copies(meta: MetadataStore, stripe_id: bytes, written: dict[int, str]) -> None:
    """Queue shard copies no manifest will name (index -> node) for garbage collection.

    A later commit may name the same copy after all (placement is deterministic per stripe:
    a retried repair writes shard i to the same node again): the collector skips every copy
    the live manifest names when it falls due (`storage/workers/gc.py`).
    """
    if not written:
        return
    width = max(written) + 1
    nodes = [written.get(i) for i in range(width)]
    await meta.put(gc_key(time.time_ns(), stripe_id), pack({"nodes": nodes}))
