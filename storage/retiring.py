"""Retiring a many-part version or upload in bounded, crash-safe steps.

Removing an object version queues each of its stripes for collection and deletes its index
entry (`X`): 2 operations per part. Completing or aborting an upload deletes each part
record too. etcd refuses a transaction of more than `--max-txn-ops` operations (1024 on the
members Tessera starts, 128 by default) whole, so one transaction per removal failed on etcd
for objects of more than ~510 parts (S3 allows 10,000).

A version or upload of more than `INLINE_PARTS` parts is therefore retired in two stages.
The transaction that makes it invisible (the DELETE, overwrite, lifecycle expiry,
CompleteMultipartUpload or AbortMultipartUpload) writes one marker `(RT, bucket, key,
token)` instead of the per-part operations; then `finish` works through the marker in
steps of at most `STEP_PARTS` parts, each one transaction that compares the marker
unchanged, and deletes the marker last. The request runs `finish` right after its commit;
a process killed in between leaves the marker, which the reclaim worker finishes
(`storage/workers/reclaim.py`). Nothing is visible half-deleted: the version or upload is
gone for S3 from the first transaction on; only its collection is spread out.

Markers:
- `{"stripes": [[stripe id, nodes], ...], "due": ns}`: a retired version's stripes (or an
  expired restored copy's); each step queues a batch of them for collection at `due` and
  deletes their `X` entries. A step repeated after a
  crash writes the same keys again (the same GC key, a delete of a deleted key): harmless.
- `{"upload": id, "kept": [part numbers], "due": ns}`: a completed (`kept` = the parts the
  object is made of) or aborted (`kept` empty) upload; each step deletes a batch of its part
  records (compared unchanged), and queues the stripes of those not kept. A kept part's `X`
  entry keeps its "part" state: `load_manifest` finds the completed version by upload id.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from storage.keyspace import (
    discarded_key,
    gc_key,
    part_prefix,
    retiring_key,
    span,
    stripe_index_key,
)
from storage.keyspace import unpack as key_parts
from storage.metadata import Item, MetadataStore, Txn
from storage.metadata.fence import LeaseFenced
from storage.records import ObjectVersion, pack, unpack

log = logging.getLogger("tessera.retiring")

# Both fit etcd's default --max-txn-ops (128), not only the 1024 of Tessera's own members: an
# abort of INLINE_PARTS parts is 3 ops each (+1), a step at most 3 per part (P, G, X).
INLINE_PARTS = 40  # at most this many parts: retired in the removal's own transaction
STEP_PARTS = 40  # parts per step


def new_key(bucket: str, key: str) -> bytes:
    return retiring_key(bucket, key, secrets.token_hex(8))


def stripes_marker(bucket: str, key: str, stripes: list[tuple[bytes, list[Any]]],
                   due_ns: int) -> tuple[bytes, bytes]:
    """The marker (key, value) that queues `stripes` ((stripe id, nodes) of a removed
    version or restored copy) for collection at `due_ns` and deletes their `X` entries."""
    return new_key(bucket, key), pack({"stripes": [list(s) for s in stripes], "due": due_ns})


def version_marker(v: ObjectVersion, due_ns: int) -> tuple[bytes, bytes]:
    """The marker (key, value) that retires version `v`'s stripes after its removal."""
    return stripes_marker(v.bucket, v.key, [(p.stripe_id, list(p.nodes)) for p in v.parts
                                            if p.stripe_id], due_ns)


def upload_marker(bucket: str, key: str, upload_id: str, kept: list[int],
                  due_ns: int) -> tuple[bytes, bytes]:
    """The marker (key, value) that deletes an upload's part records after its completion
    or abort, queueing the stripes of the parts not in `kept`."""
    return new_key(bucket, key), pack({"upload": upload_id, "kept": kept, "due": due_ns})


def discard_puts(stripe_id: bytes, nodes: list[Any], due_ns: int, until_ns: int,
                 ) -> dict[bytes, bytes]:
    """A discarded write's stripe (no commit named it): its tombstone (`XD`, which every
    commit indexing the stripe compares absent, until `until_ns`) and its GC entry at
    `due_ns` (requeued by the collector until the tombstone may go)."""
    return {discarded_key(stripe_id): pack({"until": until_ns}),
            gc_key(due_ns, stripe_id): pack({"nodes": list(nodes), "discarded": until_ns})}


def _queue(stripe_id: bytes, nodes: list[Any], due: int, puts: dict[bytes, bytes],
           deletes: list[bytes]) -> None:
    if stripe_id:
        if any(nodes):
            puts[gc_key(due, stripe_id)] = pack({"nodes": list(nodes)})
        deletes.append(stripe_index_key(stripe_id))


async def _stripe_steps(meta: MetadataStore, item: Item, m: dict[str, Any]) -> bool:
    due = int(m["due"])
    compares = {item.key: item.revision}
    stripes = m["stripes"]
    for at in range(0, len(stripes), STEP_PARTS):
        puts: dict[bytes, bytes] = {}
        deletes: list[bytes] = []
        for stripe_id, nodes in stripes[at:at + STEP_PARTS]:
            _queue(bytes(stripe_id), nodes, due, puts, deletes)
        if not await meta.txn(Txn(compares=compares, puts=puts, deletes=tuple(deletes))):
            return False  # finished (or being finished) by another process
    return True


async def _upload_steps(meta: MetadataStore, item: Item, m: dict[str, Any]) -> bool:
    from storage.multipart_records import Part  # (it imports objects, which imports us)

    kept, due = set(m["kept"]), int(m["due"])
    compares = {item.key: item.revision}
    while parts := await meta.range(*span(part_prefix(str(m["upload"]))), limit=STEP_PARTS):
        puts: dict[bytes, bytes] = {}
        deletes: list[bytes] = []
        step = dict(compares)
        for it in parts:
            step[it.key] = it.revision
            deletes.append(it.key)
            p = Part.decode(it.value)
            if p.number not in kept:
                _queue(p.stripe_id, p.nodes, due, puts, deletes)
        if not await meta.txn(Txn(compares=step, puts=puts, deletes=tuple(deletes))):
            if await meta.get(item.key) is None:
                return False  # finished by another process
    return True


async def finish(meta: MetadataStore, item: Item) -> None:
    """Every remaining step of the retirement marker `item`, then the marker's delete."""
    m = unpack(item.value)
    steps = _stripe_steps if "stripes" in m else _upload_steps
    if await steps(meta, item, m):
        await meta.txn(Txn(compares={item.key: item.revision}, deletes=(item.key,)))


async def finish_now(meta: MetadataStore, keys: list[bytes]) -> None:
    """Finish the markers a request's commit just wrote; a failure is left to the reclaim
    worker (the marker stays), not the request's: its commit applied."""
    for key in keys:
        try:
            item = await meta.get(key)
            if item is not None:
                await finish(meta, item)
        except LeaseFenced:
            raise  # a stale worker's step (its commit applied): the next ones are refused too
        except Exception:  # noqa: BLE001 - the worker finishes it
            log.warning("retiring %r left to the reclaim worker", key_parts(key), exc_info=True)
