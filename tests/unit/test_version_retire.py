"""Retiring a restored version stays within one etcd transaction whatever its part count.

Review18b: a DELETE (overwrite, lifecycle expiry) of a restored archived object queued the
restored copy's every stripe in the delete's own transaction (4 ops per part instead of 2),
so a 300-part restored object's delete went over etcd's `--max-txn-ops` (1024 here) and was
refused until the restore expired. The copy is now handed to the restore-expiry queue in 2
ops, by the one helper both removers (ObjectService, the reclaim worker) use; the version's
own 600 stripes go to a retirement marker (`storage/retiring.py`), so the whole removal is a
few ops.
"""

from __future__ import annotations

import asyncio
import dataclasses
from types import SimpleNamespace

from storage.keyspace import (
    RESTORE_EXPIRY,
    RESTORE_QUEUE,
    archive_job_key,
    object_key,
    unpack,
)
from storage.metadata import Item, Txn
from storage.metadata.etcd_batch import Pending
from storage.objects import ObjectService
from storage.records import ObjectVersion, PartLayout
from storage.records import unpack as unpack_record
from storage.workers.reclaim import _Batch

PARTS = 600
NODES = ["n1", "n2", "n3", "n4", "n5", "n6"]


def _parts(tag: int) -> list[PartLayout]:
    return [PartLayout(number=i + 1, size=8 << 20, etag="e", k=4, m=2, segment_size=1 << 20,
                       stripe_id=bytes([tag]) + i.to_bytes(4, "big"), nodes=list(NODES))
            for i in range(PARTS)]


def _version(restored: bool) -> ObjectVersion:
    v = ObjectVersion(bucket="b", key="big", version_id="v1", tenant="t", size=0, etag="e",
                      last_modified=1.0, parts=_parts(1), storage_class="GLACIER")
    if restored:
        v.restore = {"state": "done", "days": 1000, "expiry": 9e9,
                     "expiry_key": archive_job_key(RESTORE_EXPIRY, 9 * 10**18, "b", "big", "v1"),
                     "parts": [dataclasses.asdict(p) for p in _parts(2)]}
    return v


def _etcd_ops(puts: dict[bytes, bytes], deletes: list[bytes]) -> int:
    """The operation count etcd sees for the transaction (the store's own accounting)."""
    async def count() -> int:
        return Pending.of(Txn(puts=puts, deletes=tuple(deletes)), ()).ops
    return asyncio.run(count())


def _object_service_ops(v: ObjectVersion) -> tuple[int, dict[bytes, bytes], list[bytes]]:
    puts: dict[bytes, bytes] = {}
    deletes = [object_key(v.bucket, v.key)]  # the record itself
    ObjectService._retire(SimpleNamespace(gc_grace_s=60.0), [v], puts, deletes)  # type: ignore[arg-type]
    return _etcd_ops(puts, deletes), puts, deletes


def _reclaim_ops(v: ObjectVersion) -> tuple[int, dict[bytes, bytes], list[bytes]]:
    batch = _Batch(60.0)
    batch.version(Item(key=object_key(v.bucket, v.key), value=v.encode(), revision=7))
    return _etcd_ops(batch.puts, batch.deletes), batch.puts, batch.deletes


def test_a_restored_copy_costs_two_ops_in_the_removal() -> None:
    for remove in (_object_service_ops, _reclaim_ops):
        plain, _, _ = remove(_version(False))
        restored, puts, deletes = remove(_version(True))
        assert restored <= plain + 2, (remove.__name__, plain, restored)
        # the copy is not lost: one AE entry, due with the version's own GC entries, names
        # every restored stripe with its nodes (the expiry worker retires it from there)
        old_ae = _version(True).restore["expiry_key"]
        assert old_ae in deletes
        ae = [k for k in puts if k.startswith(b"AE\x00")]
        assert len(ae) == 1 and ae[0] != old_ae
        due = {int(unpack(k)[1]) for k in puts if k.startswith(b"G\x00")} | {
            int(unpack_record(value)["due"]) for k, value in puts.items()
            if k.startswith(b"RT\x00")}  # (the version's own stripes: `retiring`'s marker)
        assert due == {int(unpack(ae[0])[1])}
        assert plain <= 3, (remove.__name__, plain)  # 600 parts: a marker, not 2 ops each
        stripes = unpack_record(puts[ae[0]])["stripes"]
        assert [s["stripe_id"] for s in stripes] == [p.stripe_id for p in _parts(2)]
        assert all(s["nodes"] == NODES for s in stripes)


def test_a_pending_restore_job_goes_with_the_version() -> None:
    """Reclaim dropped a pending restore job (AR) and ObjectService left it to be pruned
    when due (up to 48 h later); both drop it now."""
    v = _version(False)
    v.restore = {"state": "pending", "queue_key": archive_job_key(RESTORE_QUEUE, 5, "b", "big",
                                                                  "v1")}
    for remove in (_object_service_ops, _reclaim_ops):
        _, _, deletes = remove(v)
        assert v.restore["queue_key"] in deletes, remove.__name__


def test_an_expired_restored_copy_of_many_parts_goes_in_steps() -> None:
    """The restore-expiry worker's retirement of a 600-stripe copy: 2 ops per stripe in one
    transaction was over etcd's 1024; now one retirement marker naming every stripe with
    its nodes (`storage/retiring.py` works through it in steps)."""
    from storage import archive

    stripes = [{"stripe_id": p.stripe_id, "nodes": p.nodes} for p in _parts(2)]
    puts, deletes, markers = archive._retire("b", "big", stripes)
    assert _etcd_ops(puts, deletes) == 1 and list(puts) == markers
    value = unpack_record(puts[markers[0]])
    assert [(bytes(s), n) for s, n in value["stripes"]] == [
        (p.stripe_id, NODES) for p in _parts(2)]
