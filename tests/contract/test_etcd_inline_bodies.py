"""Small objects' sealed bodies on etcd live under their own keys `(IB, bucket, key, ref)`,
not in the records a listing scans (storage/inline_bodies.py): written with the record,
deleted with the version that owns them, read back with the current record in one request,
and records written with the body inside (before this) still read.

The real gateway pipeline over the real etcd store (the 3-member cluster conftest.py starts),
driven by boto3; the records are then looked at in etcd directly.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from storage.keyspace import inline_body_prefix, object_key, span
from storage.records import ObjectVersion
from tests.contract import test_etcd_round_trips as rt
from tests.contract.test_etcd_round_trips import RecordingStore, _measure
from tests.contract.test_metadata_etcd import pytestmark  # noqa: F401

gateway, bucket, root_key = rt.gateway, rt.bucket, rt.root_key  # the same fixtures

BODY = 4096


async def _bodies(store: RecordingStore, bucket: str, key: str) -> dict[bytes, bytes]:
    items = await store.inner.range(*span(inline_body_prefix(bucket, key)), limit=100)
    return {i.key: i.value for i in items}


async def _record(store: RecordingStore, bucket: str, key: str) -> tuple[int, ObjectVersion]:
    item = await store.inner.get(object_key(bucket, key))
    assert item is not None
    return len(item.value), ObjectVersion.decode(item.value)


async def test_a_small_body_lives_apart_and_leaves_with_its_version(
        gateway: tuple[Any, RecordingStore], bucket: str) -> None:
    s3, store = gateway
    one, two = os.urandom(BODY), os.urandom(BODY)
    await asyncio.to_thread(s3.put_object, Bucket=bucket, Key="k", Body=one)
    size, v = await _record(store, bucket, "k")
    assert size < 1024 and v.parts[0].inline == b"" and v.parts[0].body_ref  # no body inside
    bodies = await _bodies(store, bucket, "k")
    assert len(bodies) == 1 and len(next(iter(bodies.values()))) > BODY  # sealed: tag added
    got = await asyncio.to_thread(lambda: s3.get_object(Bucket=bucket, Key="k")["Body"].read())
    assert got == one
    # an overwrite puts a new body and deletes the old one in its transaction
    await asyncio.to_thread(s3.put_object, Bucket=bucket, Key="k", Body=two)
    after = await _bodies(store, bucket, "k")
    assert len(after) == 1 and after.keys() != bodies.keys()
    got = await asyncio.to_thread(
        lambda: s3.get_object(Bucket=bucket, Key="k", Range="bytes=10-19")["Body"].read())
    assert got == two[10:20]
    # a copy onto itself (new metadata) gets its own body, the old one goes
    await asyncio.to_thread(s3.copy_object, Bucket=bucket, Key="k",
                            CopySource={"Bucket": bucket, "Key": "k"},
                            Metadata={"a": "b"}, MetadataDirective="REPLACE")
    copied = await _bodies(store, bucket, "k")
    assert len(copied) == 1 and copied.keys() != after.keys()
    got = await asyncio.to_thread(lambda: s3.get_object(Bucket=bucket, Key="k")["Body"].read())
    assert got == two
    await asyncio.to_thread(s3.delete_object, Bucket=bucket, Key="k")
    assert await _bodies(store, bucket, "k") == {}
    # a listing page reads the small records only: a name, not a body, per key
    for i in range(3):
        await asyncio.to_thread(s3.put_object, Bucket=bucket, Key=f"l/{i}", Body=one)
    scanned = await store.inner.range(*span(object_key(bucket, "l")[:-1]), limit=10)
    assert len(scanned) == 3 and all(len(i.value) < 1024 for i in scanned)
    for i in range(3):
        await asyncio.to_thread(s3.delete_object, Bucket=bucket, Key=f"l/{i}")


async def test_each_version_keeps_its_own_body(gateway: tuple[Any, RecordingStore],
                                               bucket: str) -> None:
    s3, store = gateway
    first = os.urandom(BODY)
    await asyncio.to_thread(s3.put_object, Bucket=bucket, Key="v", Body=first)  # null version
    await asyncio.to_thread(s3.put_bucket_versioning, Bucket=bucket,
                            VersioningConfiguration={"Status": "Enabled"})
    bodies = [os.urandom(BODY) for _ in range(2)]
    vids = [(await asyncio.to_thread(s3.put_object, Bucket=bucket, Key="v", Body=b))["VersionId"]
            for b in bodies]
    assert len(await _bodies(store, bucket, "v")) == 3

    def read(vid: str) -> bytes:
        return s3.get_object(Bucket=bucket, Key="v", VersionId=vid)["Body"].read()

    assert await asyncio.to_thread(read, "null") == first
    assert [await asyncio.to_thread(read, vid) for vid in vids] == bodies
    await asyncio.to_thread(s3.delete_object, Bucket=bucket, Key="v", VersionId=vids[1])
    assert len(await _bodies(store, bucket, "v")) == 2  # the current one went, others stay
    got = await asyncio.to_thread(lambda: s3.get_object(Bucket=bucket, Key="v")["Body"].read())
    assert got == bodies[0]
    # the null version rewritten (versioning suspended) replaces the old null's body only
    await asyncio.to_thread(s3.put_bucket_versioning, Bucket=bucket,
                            VersioningConfiguration={"Status": "Suspended"})
    again = os.urandom(BODY)
    await asyncio.to_thread(s3.put_object, Bucket=bucket, Key="v", Body=again)
    assert len(await _bodies(store, bucket, "v")) == 2
    assert await asyncio.to_thread(read, "null") == again
    assert await asyncio.to_thread(read, vids[0]) == bodies[0]
    for vid in ("null", vids[0]):
        await asyncio.to_thread(s3.delete_object, Bucket=bucket, Key="v", VersionId=vid)
    assert await _bodies(store, bucket, "v") == {}


async def test_a_record_with_its_body_inside_still_reads(
        gateway: tuple[Any, RecordingStore], bucket: str) -> None:
    """etcd data written before bodies moved apart: no upgrade pass, it reads as it is."""
    s3, store = gateway
    body = os.urandom(BODY)
    await asyncio.to_thread(s3.put_object, Bucket=bucket, Key="old", Body=body)
    (bkey, sealed), = (await _bodies(store, bucket, "old")).items()
    _, v = await _record(store, bucket, "old")
    v.parts[0].inline, v.parts[0].body_ref = sealed, ""
    await store.inner.put(object_key(bucket, "old"), v.encode())  # as the old writer did
    await store.inner.delete(bkey)
    size, _ = await _record(store, bucket, "old")
    assert size > BODY
    got = await asyncio.to_thread(lambda: s3.get_object(Bucket=bucket, Key="old")["Body"].read())
    assert got == body
    await asyncio.to_thread(s3.delete_object, Bucket=bucket, Key="old")


async def test_round_trips_per_4k_get(gateway: tuple[Any, RecordingStore], bucket: str) -> None:
    """The current record and its body are read in one request, with the bucket's record
    (`inline_bodies.read_ahead`): the body apart costs a GET no round trip."""
    s3, store = gateway
    body = os.urandom(BODY)
    await asyncio.to_thread(s3.put_object, Bucket=bucket, Key="g", Body=body)
    await asyncio.to_thread(lambda: s3.get_object(Bucket=bucket, Key="g")["Body"].read())
    _, trips = await _measure(store, lambda: s3.get_object(Bucket=bucket, Key="g")["Body"].read())
    assert trips == 1  # the bucket, the record and its body
    await asyncio.to_thread(s3.delete_object, Bucket=bucket, Key="g")
