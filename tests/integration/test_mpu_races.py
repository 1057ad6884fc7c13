"""Multipart uploads under racing requests, through boto3 on a real cluster: the same part
number uploaded by several clients at once, then CompleteMultipartUpload, AbortMultipartUpload
and a further UploadPart racing each other.

Invariants: no 5xx; each call answers success or AWS's NoSuchUpload; exactly one of Complete
and Abort succeeds; a completed object reads back as the parts ListParts named (bytes, ETag
"-N", parts count); the upload is gone after; and no stripe any of these writes left on the
nodes is unaccounted for in the store: each is the live object's, or queued for collection
(GC queue or discard tombstone), never a stray the orphan sweep would have to find; and
those queued due now (an aborted upload's parts) are then deleted from the nodes.
"""

from __future__ import annotations

import hashlib
import random
import sqlite3
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from storage import keyspace as ks
from storage.multipart_records import Part
from storage.records import unpack
from storage.shards.ids import parse_shard_id
from tests.integration.cluster import LocalCluster, wait_for

MiB = 1 << 20
TRIALS = 2


def _call(f: Callable[[], Any]) -> tuple[int, str, Any]:
    """(HTTP status, error code or "", response) of one boto3 call."""
    try:
        r = f()
        return r["ResponseMetadata"]["HTTPStatusCode"], "", r
    except ClientError as e:
        return e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Code"], None


def _held(c: LocalCluster) -> set[str]:
    return {sid for d in sorted((c.data / "nodes").iterdir()) for sid in c.listed(d.name)}


def _space(conn: sqlite3.Connection, prefix: str) -> dict[bytes, bytes]:
    lo, hi = ks.space(prefix)
    return dict(conn.execute("SELECT k, v FROM kv WHERE k >= ? AND k < ?", (lo, hi)))


@dataclass
class _Store:
    """What the store says of stripes and parts, read at once (`at`: when, in ns)."""

    index: dict[bytes, bytes]
    gc: list[tuple[int, str]]  # (due, stripe) of each GC queue entry
    discarded: set[str]
    parts: list[bytes]
    at: int

    @staticmethod
    def read(c: LocalCluster) -> _Store:
        conn = sqlite3.connect(f"file:{c.db_path}?mode=ro", uri=True)
        try:
            at = time.time_ns()
            gc = [ks.unpack(k)[1:] for k in _space(conn, ks.GC)]
            return _Store(index=_space(conn, ks.STRIPE),
                          gc=[(int(due), stripe) for due, stripe in gc],
                          discarded={ks.unpack(k)[1]
                                     for k in _space(conn, ks.STRIPE_DISCARDED)},
                          parts=list(_space(conn, ks.PART)), at=at)
        finally:
            conn.close()


def _unaccounted(c: LocalCluster, stripes: set[str], bucket: str,
                 completed: set[str]) -> set[str]:
    """Those of `stripes` still on the nodes that the store neither indexes nor queues
    (the store read first); a stripe of `bucket` indexed must be a completed key's."""
    store = _Store.read(c)
    held = {parse_shard_id(s)[0].hex() for s in _held(c)}
    queued = {stripe for _, stripe in store.gc} | store.discarded
    out = set()
    for stripe in stripes & held:
        entry = store.index.get(ks.pack(ks.STRIPE, stripe))
        if entry is None:
            if stripe not in queued:
                out.add(stripe)
            continue
        e = unpack(entry)
        if e.get("bucket") == bucket:  # (another bucket's: a repair, a rebalance)
            assert e["state"] == "live" and e["key"] in completed, (stripe, e)
    return out

def _race(c: LocalCluster, s3: Any, bucket: str, key: str, rnd: random.Random,
          ) -> tuple[str, bool, set[str]]:
    """One upload raced as the module says: (its id, whether Complete won, the stripes of
    the parts Complete named)."""
    uid = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    bodies = [(1, rnd.randbytes(5 * MiB + i)) for i in range(3)]
    bodies += [(2, rnd.randbytes(1000 + i)) for i in range(2)]
    with ThreadPoolExecutor(len(bodies)) as ex:
        answers = list(ex.map(lambda nb: _call(lambda: s3.upload_part(
            Bucket=bucket, Key=key, UploadId=uid, PartNumber=nb[0], Body=nb[1])), bodies))
    assert [a[0] for a in answers] == [200] * len(bodies), answers
    by_etag = {f'"{hashlib.md5(b).hexdigest()}"': b for _, b in bodies}
    listed = s3.list_parts(Bucket=bucket, Key=key, UploadId=uid)["Parts"]
    assert [p["PartNumber"] for p in listed] == [1, 2]
    for p in listed:  # one writer's part, whole
        assert p["ETag"] in by_etag and p["Size"] == len(by_etag[p["ETag"]])
    parts = [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]} for p in listed]
    stripes = set()
    for p in listed:
        raw = c.db_get(ks.part_key(uid, p["PartNumber"]))
        assert raw is not None
        stripes.add(Part.decode(raw).stripe_id.hex())
    racers = {
        "complete": lambda: s3.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=uid, MultipartUpload={"Parts": parts}),
        "abort": lambda: s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=uid),
        "part": lambda: s3.upload_part(Bucket=bucket, Key=key, UploadId=uid,
                                       PartNumber=3, Body=b"late" * 500),
    }
    with ThreadPoolExecutor(len(racers)) as ex:
        got = dict(zip(racers, ex.map(_call, racers.values()), strict=True))
    ok = {"complete": 200, "abort": 204, "part": 200}
    for name, (status, code, _) in got.items():
        assert (status, code) in ((ok[name], ""), (404, "NoSuchUpload")), (name, got)
    won = got["complete"][0] == 200
    assert won != (got["abort"][0] == 204), got
    if won:
        want = b"".join(by_etag[p["ETag"]] for p in listed)
        etags = b"".join(bytes.fromhex(p["ETag"].strip('"')) for p in listed)
        etag = f'"{hashlib.md5(etags).hexdigest()}-2"'
        assert got["complete"][2]["ETag"] == etag
        g = s3.get_object(Bucket=bucket, Key=key)
        assert g["ETag"] == etag and g["Body"].read() == want
        assert s3.head_object(Bucket=bucket, Key=key, PartNumber=1)["PartsCount"] == 2
    else:
        assert _call(lambda: s3.head_object(Bucket=bucket, Key=key))[0] == 404
    assert _call(lambda: s3.list_parts(Bucket=bucket, Key=key, UploadId=uid))[:2] == (
        404, "NoSuchUpload")
    return uid, won, stripes


def test_racing_parts_complete_and_abort(cluster: LocalCluster) -> None:
    s3 = cluster.client()
    bucket = f"mpurace-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    before = _held(cluster)
    rnd = random.Random(21)
    uploads: list[str] = []
    completed: set[str] = set()
    aborted: set[str] = set()  # the stripes of the parts of the uploads Abort won
    for trial in range(TRIALS):
        uid, won, stripes = _race(cluster, s3, bucket, f"k{trial}", rnd)
        uploads.append(uid)
        if won:
            completed.add(f"k{trial}")
        else:
            aborted |= stripes
    # And one upload aborted unraced, so the abort checks below never go without one.
    uid = s3.create_multipart_upload(Bucket=bucket, Key="plain")["UploadId"]
    uploads.append(uid)
    for n in (1, 2):
        s3.upload_part(Bucket=bucket, Key="plain", UploadId=uid, PartNumber=n, Body=b"p" * n)
        raw = cluster.db_get(ks.part_key(uid, n))
        assert raw is not None
        aborted.add(Part.decode(raw).stripe_id.hex())
    s3.abort_multipart_upload(Bucket=bucket, Key="plain", UploadId=uid)

    # The store first, the nodes after: a stripe the collector finished with left the nodes
    # before its queue entry went, so it is not listed below.
    store = _Store.read(cluster)
    assert not [k for k in store.parts if ks.unpack(k)[1] in uploads], (
        "part records outlived their upload")
    new = {parse_shard_id(s)[0].hex() for s in _held(cluster) - before}
    due = {stripe for at, stripe in store.gc if at <= store.at}
    # A stripe not indexed nor queued may be another test's write still in flight (a
    # restore, a transition): it gets indexed or queued; a stray never does.
    wait_for(lambda: not _unaccounted(cluster, new, bucket, completed),
             "every new stripe indexed or queued", timeout=30)
    # An aborted upload's parts, and whatever else was queued due now (a part that lost to
    # Abort or Complete), leave the nodes: the collector's doing, waited for, not timed.
    gone = (new & due) | aborted
    wait_for(lambda: not {parse_shard_id(s)[0].hex() for s in _held(cluster)} & gone,
             "the collector to delete the shards queued due now", timeout=30)
