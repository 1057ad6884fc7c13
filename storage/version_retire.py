"""Retiring a version record for good: what goes with it, in the transaction that removes it.

One place for every remover (an overwrite or delete in `ObjectService`, a shredded tenant's
`reclaim` batch): the version's stripes go to the GC queue after the grace period with
their `X` entries deleted, its inline bodies kept apart are deleted, a pending restore job
(`AR`) is dropped, and a restored copy is handed to the restore-expiry queue (`AE`) as due
at the same time, carrying the copy's stripes and nodes as the record names them.

The copy is handed over in 2 ops (one `AE` entry put, the old one deleted) rather than 2
ops per part queued inline: a restored multipart object of N parts would double the
removal's transaction (4N ops), and etcd refuses a transaction over `--max-txn-ops` (1024
here) whole, so a DELETE of a restored object with 256+ parts failed until the restore
expired. `ArchiveService.expire_restored` retires an entry whose version is gone from the
stripes in its value.
"""

from __future__ import annotations

from typing import Any

from storage import inline_bodies, retiring
from storage.keyspace import RESTORE_EXPIRY, archive_job_key, gc_key, stripe_index_key
from storage.records import ObjectVersion, pack


def restored_stripes(r: dict[str, Any]) -> list[dict[str, Any]]:
    """A restore record's copy as `AE` entries carry it: each stripe id with its nodes."""
    return [{"stripe_id": p["stripe_id"], "nodes": p["nodes"]} for p in r.get("parts") or []]


def retire_version(v: ObjectVersion, due_ns: int, puts: dict[bytes, bytes],
                   deletes: list[bytes], inline_parts: int = retiring.INLINE_PARTS,
                   ) -> bytes | None:
    """Add to a transaction what retiring `v` (its record deleted by the caller) takes,
    everything due for collection at `due_ns`. A version of more than `inline_parts`
    parts (what the transaction has room for) gets a retirement marker instead of its
    stripes' queue entries: its key is returned, for `retiring.finish_now` once the
    transaction applied."""
    inline_bodies.retire(v, deletes)
    marker = None
    if len(v.parts) > inline_parts:
        marker, value = retiring.version_marker(v, due_ns)
        puts[marker] = value
    else:
        for p in v.parts:
            if p.stripe_id:
                if any(p.nodes):
                    puts[gc_key(due_ns, p.stripe_id)] = pack({"nodes": list(p.nodes)})
                deletes.append(stripe_index_key(p.stripe_id))
    r = v.restore
    if r.get("queue_key"):
        deletes.append(r["queue_key"])  # the restore job: its worker would find no version
    if r.get("expiry_key"):
        stripes = restored_stripes(r)
        due = archive_job_key(RESTORE_EXPIRY, due_ns, v.bucket, v.key, v.version_id)
        if stripes:
            puts[due] = pack({"stripes": stripes})
        if r["expiry_key"] != due:  # (a put and a delete of one key: etcd refuses the txn)
            deletes.append(r["expiry_key"])
    return marker
