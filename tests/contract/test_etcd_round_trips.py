"""Round trips to etcd per S3 request (issue 17's multi-host path): with warm caches a 4 KiB
PUT of a new key is 1 (the commit, on the cached bucket record whose revision it compares),
an overwrite 2 (the first commit's failure hands back the current record), a ListObjectsV2
page of 1,000 keys 2 (the bucket, one range).

The real gateway pipeline (`S3Server`) over a real `Cluster` on the real etcd store (the
3-member cluster conftest.py starts) and in-memory nodes, driven by boto3; the store is
wrapped only to record which calls each request makes, and `EtcdStore.round_trips` counts
the HTTP requests actually sent. The short-lived auth caches are made long-lived, so that
a slow machine cannot turn a cache expiry into a spurious extra round trip.

A PutObject decided on the gateway's cached bucket record never acts on a stale one: when
another gateway (a second `BucketService` on its own etcd connection) changed the bucket,
the commit's compare of the record's revision fails and the whole request runs again on
the current record (versioning, policy, deletion); a refusal decided on a cached record
is checked against a fresh read.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import os
import secrets
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore import UNSIGNED
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from ops.botoconfig import no_retries
from storage import tenants as tenants_mod
from storage.buckets import BucketService
from storage.cluster import Cluster
from storage.crypto.keys import FileRootKey
from storage.errors import IntegrityError
from storage.keyspace import bucket_key, inline_body_prefix, object_key, system_key, tenant_key
from storage.metadata import Item, Txn
from storage.metadata.etcd import EtcdStore
from storage.metadata.etcd_batch import Pending
from storage.tenants import TenantService
from storage.testing.simnodes import SimNodes
from tests.contract.conftest import session_tls
from tests.inproc import served_s3, sim_config

pytestmark = pytest.mark.skipif(not os.environ.get("TESSERA_ETCD_ENDPOINTS"),
                                reason="no etcd cluster (etcd not installed)")


class RecordingStore:
    """The real etcd store, recording each call as (method, key space of its first key)."""

    def __init__(self, inner: EtcdStore) -> None:
        self.inner, self.calls = inner, []  # type: list[tuple[str, str]]
        self.written: set[bytes] = set()  # deleted afterwards: the etcd cluster is shared

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _note(self, method: str, key: bytes) -> None:
        self.calls.append((method, key.split(b"\x00", 1)[0].decode()))  # (a prefix too)

    async def get(self, key: bytes) -> Item | None:
        self._note("get", key)
        return await self.inner.get(key)

    async def range(self, start: bytes, end: bytes, limit: int = 1000,
                    reverse: bool = False) -> list[Item]:
        self._note("range", start)
        return await self.inner.range(start, end, limit, reverse)

    async def get_and_range(self, keys: tuple[bytes, ...], start: bytes, end: bytes,
                            limit: int) -> tuple[list[Item | None], list[Item]]:
        self._note("get_and_range", keys[0])
        return await self.inner.get_and_range(keys, start, end, limit)

    async def get_many(self, keys: tuple[bytes, ...]) -> list[Item | None]:
        self._note("get_many", keys[0])
        return await self.inner.get_many(keys)

    async def put(self, key: bytes, value: bytes) -> int:
        self._note("put", key)
        self.written.add(key)
        return await self.inner.put(key, value)

    async def delete(self, key: bytes) -> bool:
        self._note("delete", key)
        return await self.inner.delete(key)

    async def txn(self, txn: Txn) -> bool:
        self._note("txn", next(iter(txn.compares or txn.puts), b""))
        self.written.update(txn.puts)
        return await self.inner.txn(txn)

    async def txn_or_read(self, txn: Txn, reads: tuple[bytes, ...]
                          ) -> tuple[bool, dict[bytes, Item | None]]:
        self._note("txn", next(iter(txn.compares or txn.puts), b""))
        self.written.update(txn.puts)
        return await self.inner.txn_or_read(txn, reads)

    async def close(self) -> None:
        await self.inner.close()


@pytest.fixture(scope="module")
def bucket() -> str:
    return "rt-" + secrets.token_hex(4)


@pytest.fixture(scope="module")
def root_key(etcd_root_dir: Path) -> Path:
    """The etcd session's one root key: it wraps the system key every gateway here loads."""
    return etcd_root_dir / "root.key"


@pytest.fixture
async def gateway(tmp_path: Path, bucket: str, root_key: Path, monkeypatch: pytest.MonkeyPatch
                  ) -> AsyncIterator[tuple[Any, RecordingStore]]:
    monkeypatch.setattr(tenants_mod, "CACHE_TTL_S", 3600.0)
    monkeypatch.setattr(tenants_mod, "SHORT_TTL_S", 3600.0)
    cfg = sim_config(tmp_path, 4096)
    etcd = await EtcdStore.open(tuple(os.environ["TESSERA_ETCD_ENDPOINTS"].split(",")), session_tls())
    store = RecordingStore(etcd)
    meta: Any = store
    tenants = TenantService(meta, FileRootKey(root_key))
    try:
        await tenants.load()
    except IntegrityError:  # the session's etcd holds a system key another module's test
        # made under its own root key (its tenants are done with): this module's replaces it
        await etcd.delete(system_key("access-secret-kek"))
        await tenants.load()
    tenant = "rt" + secrets.token_hex(4)
    await tenants.create(tenant)
    cred = await tenants.create_key(tenant)
    pool = ThreadPoolExecutor(2)
    cluster = Cluster.wire(cfg, meta, tenants, SimNodes(list(cfg.nodes)), pool, pool)
    await cluster.buckets.create(tenant, bucket)
    try:
        async with served_s3(cluster, cfg, cred.access_key, cred.secret_key) as s3:
            yield s3, store
    finally:
        await etcd.txn(Txn(deletes=tuple(store.written)))
        await store.close()
        pool.shutdown()


def _sent(store: RecordingStore) -> int:
    """etcd round trips so far, less the auth stamp's periodic checks (`etcd_stamp.CHECK_S`:
    a timer's, not a request's) and the stamp reads of requests that came while a check was
    late on a loaded box (`unconfirmed`); each is one round trip on a healthy cluster."""
    st = store.inner._stamp  # noqa: SLF001
    return int(store.inner.round_trips - st.checks - st.unconfirmed)


async def _measure(store: RecordingStore, call: Any, **kwargs: Any
                   ) -> tuple[list[tuple[str, str]], int]:
    """(the store calls, the etcd round trips) of one request."""
    store.calls.clear()
    before = _sent(store)
    await asyncio.to_thread(call, **kwargs)
    return list(store.calls), _sent(store) - before


async def test_round_trips_per_4k_put(gateway: tuple[Any, RecordingStore], bucket: str) -> None:
    s3, store = gateway
    body = os.urandom(4096)
    await asyncio.to_thread(s3.put_object, Bucket=bucket, Key="warm", Body=body)  # warm caches
    calls, trips = await _measure(store, s3.put_object, Bucket=bucket, Key="new", Body=body)
    assert (calls, trips) == ([("txn", "O")], 1)  # the cached bucket record, compared
    calls, trips = await _measure(store, s3.put_object, Bucket=bucket, Key="new", Body=body)
    assert (calls, trips) == ([("txn", "O"), ("txn", "O")], 2)
    store.calls.clear()
    before = _sent(store)
    with pytest.raises(ClientError) as refused:
        await asyncio.to_thread(s3.put_object, Bucket=bucket, Key="new", Body=body,
                                IfNoneMatch="*")
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    # refused by the commit's own compare (the record handed back), then the bucket read
    # once: a refusal decided on the cached bucket record stands only if it is current
    assert (store.calls, _sent(store) - before) == ([("txn", "O"), ("get", "B")], 2)
    got = await asyncio.to_thread(lambda: s3.get_object(Bucket=bucket, Key="new")["Body"].read())
    assert got == body


async def test_what_a_4k_put_writes_to_etcd(gateway: tuple[Any, RecordingStore], bucket: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The members' CPU per PutObject grows with the ops and bytes of its nested commit
    (session 21, 12 commits a Txn on 3 members: the 4 KiB bodies and 3 compares each cost
    ~0.05-0.1 ms a commit over 2 empty puts): a new key's 4 KiB PUT
    writes its record and its sealed body and nothing else (no counter, stamp or index key
    per PUT), compares the record absent and the bucket's and tenant's revisions, reads
    those three on failure, and its encoded commit is the body plus under 1 KiB."""
    s3, store = gateway
    await asyncio.to_thread(s3.put_object, Bucket=bucket, Key="warm", Body=BODY)
    inner = store.inner
    commits: list[tuple[Txn, tuple[bytes, ...]]] = []
    real = inner.txn_or_read

    async def seen(txn: Txn, reads: tuple[bytes, ...]) -> Any:
        commits.append((txn, reads))
        return await real(txn, reads)

    monkeypatch.setattr(inner, "txn_or_read", seen)
    await asyncio.to_thread(s3.put_object, Bucket=bucket, Key="shape", Body=BODY)
    [(txn, reads)] = commits
    okey = object_key(bucket, "shape")
    others = [k for k in txn.puts if k != okey]
    assert len(others) == 1, f"a 4 KiB PUT wrote more than its record and body: {others}"
    [body_key] = others
    assert body_key.startswith(inline_body_prefix(bucket, "shape"))
    assert len(txn.puts[body_key]) == len(BODY) + 16  # sealed: the GCM tag, no framing
    assert not txn.deletes
    [tenant] = set(txn.compares) - {okey, bucket_key(bucket)}
    assert tenant.startswith(tenant_key("")[:2]) and txn.compares[okey] == 0
    assert reads == (okey, bucket_key(bucket), tenant)
    assert len(txn.puts[okey]) < 1024
    assert len(Pending.of(txn, reads).body) < len(BODY) + 1024


async def test_concurrent_puts_share_one_commit(gateway: tuple[Any, RecordingStore],
                                                bucket: str, monkeypatch: pytest.MonkeyPatch
                                                ) -> None:
    """PutObjects of new keys in one bucket, arriving while a commit is in flight, all go out
    in the next request: the members' CPU is mostly per request (~1.2 ms a Txn on 3 members
    against ~0.1 ms a nested PutObject), so a PUT whose commit started writing a key every PUT
    of the bucket writes (a counter, a stamp) would cost each PUT a request of its own and
    cut 4 KiB PUT throughput on etcd by several times; the per-request pins above would not
    see it. The first commit is held until every PUT has reached the batcher (no timing)."""
    s3, store = gateway
    n = 8
    await asyncio.to_thread(s3.put_object, Bucket=bucket, Key="warm", Body=BODY)  # warm caches
    batcher = store.inner._batcher  # noqa: SLF001
    run, call = batcher.run, batcher._call  # noqa: SLF001
    arrived, all_in, requests = 0, asyncio.Event(), 0

    async def counted(txn: Txn, reads: tuple[bytes, ...]) -> Any:
        nonlocal arrived
        arrived += 1
        if arrived == n:
            all_in.set()
        return await run(txn, reads)

    async def held(body: bytes, still: Any = None) -> Any:
        nonlocal requests
        requests += 1  # the batcher's own requests (no stamp check or timer among them)
        try:  # the first commit waits for the others to queue behind it
            await asyncio.wait_for(all_in.wait(), 120)
        except TimeoutError:
            raise AssertionError(f"only {arrived} of {n} PUTs reached the batcher") from None
        return await call(body, still)

    monkeypatch.setattr(batcher, "run", counted)
    monkeypatch.setattr(batcher, "_call", held)
    bodies = {f"c{i}": os.urandom(4096) for i in range(n)}
    store.calls.clear()
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(n) as pool:
        await asyncio.gather(*(loop.run_in_executor(
            pool, lambda k=k, b=b: s3.put_object(Bucket=bucket, Key=k, Body=b))
            for k, b in bodies.items()))
    assert store.calls == [("txn", "O")] * n
    # the first alone, then the n - 1 queued behind it: counted at the batcher, not as
    # round trips less the stamp's timer checks (a check's accounting made that
    # difference 1 in one clean-clone CI run, ci20c)
    assert requests == 2, requests
    for k, b in bodies.items():
        got = await asyncio.to_thread(lambda k=k: s3.get_object(Bucket=bucket, Key=k)["Body"]
                                      .read())
        assert got == b


async def test_round_trips_per_get_head_delete(gateway: tuple[Any, RecordingStore],
                                               bucket: str) -> None:
    """A GET, HEAD or DeleteObject of the current version reads the bucket's record and the
    object's in one request (`inline_bodies.read_ahead`), a GET its first bodies too (a HEAD
    or DeleteObject uses none: the read comes before authentication, so no request makes
    etcd ship bodies nobody uses); the delete then commits (a key already gone: nothing to
    commit)."""
    s3, store = gateway
    body = os.urandom(4096)
    await asyncio.to_thread(s3.put_object, Bucket=bucket, Key="g", Body=body)
    await asyncio.to_thread(s3.get_object, Bucket=bucket, Key="g")  # warm caches

    def get(**kw: Any) -> bytes:
        return s3.get_object(**kw)["Body"].read()  # type: ignore[no-any-return]

    def missing(refuse: Any, **kw: Any) -> int:
        with pytest.raises(ClientError) as refused:
            refuse(**kw)
        return int(refused.value.response["ResponseMetadata"]["HTTPStatusCode"])

    with_bodies, records = [("get_and_range", "B")], [("get_many", "B")]
    assert await _measure(store, get, Bucket=bucket, Key="g") == (with_bodies, 1)
    assert await _measure(store, s3.head_object, Bucket=bucket, Key="g") == (records, 1)
    head = await asyncio.to_thread(s3.head_object, Bucket=bucket, Key="g")
    assert head["ContentLength"] == len(body)
    assert head["ETag"] == '"' + hashlib.md5(body).hexdigest() + '"'  # noqa: S324
    assert await asyncio.to_thread(get, Bucket=bucket, Key="g") == body
    assert await _measure(store, missing, refuse=s3.head_object, Bucket=bucket,
                          Key="none") == (records, 1)
    assert await asyncio.to_thread(missing, s3.get_object, Bucket=bucket, Key="none") == 404
    assert await _measure(store, s3.delete_object, Bucket=bucket, Key="g") == (
        [("get_many", "B"), ("txn", "O")], 2)
    assert await _measure(store, s3.delete_object, Bucket=bucket, Key="g") == (records, 1)
    assert await asyncio.to_thread(missing, s3.head_object, Bucket=bucket, Key="g") == 404


async def test_round_trips_per_anonymous_head_and_get(gateway: tuple[Any, RecordingStore]
                                                      ) -> None:
    """An anonymous HEAD or GET of an object a bucket policy makes public: authorization
    reads the object's record (its owner, ACL, tags) and takes the read-ahead, which holds
    no body and needs none; the handler then reads the record again (a GET's with its
    bodies). Two round trips, and an anonymous request (a private bucket's too: refused
    after the read-ahead) makes etcd ship no body it does not use."""
    s3, store = gateway
    name = "rt-anon-" + secrets.token_hex(4)
    await asyncio.to_thread(s3.create_bucket, Bucket=name)
    try:
        public = {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
             "Resource": f"arn:aws:s3:::{name}/*"}]}
        await asyncio.to_thread(s3.put_bucket_policy, Bucket=name, Policy=json.dumps(public))
        await asyncio.to_thread(s3.put_object, Bucket=name, Key="p", Body=b"x" * 4096)
        anon = boto3.client("s3", endpoint_url=s3.meta.endpoint_url, region_name="us-east-1",
                            config=no_retries(signature_version=UNSIGNED))
        await asyncio.to_thread(lambda: anon.get_object(Bucket=name, Key="p")["Body"].read())
        await asyncio.to_thread(anon.head_object, Bucket=name, Key="p")  # (warm caches)
        calls, trips = await _measure(store, anon.head_object, Bucket=name, Key="p")
        assert (calls, trips) == ([("get_many", "B"), ("get", "O")], 2)
        # a GET too: its read-ahead would be taken by authorization, so it reads no body
        calls, trips = await _measure(store, lambda **kw: anon.get_object(**kw)["Body"].read(),
                                      Bucket=name, Key="p")
        assert (calls, trips) == ([("get_many", "B"), ("get_and_range", "O")], 2)
        got = await asyncio.to_thread(lambda: anon.get_object(Bucket=name, Key="p")["Body"]
                                      .read())
        assert got == b"x" * 4096
    finally:
        await asyncio.to_thread(s3.delete_object, Bucket=name, Key="p")
        await asyncio.to_thread(s3.delete_bucket, Bucket=name)


async def test_a_read_ahead_never_outlives_its_request(gateway: tuple[Any, RecordingStore],
                                                       bucket: str) -> None:
    """A GET refused by authentication after its object's record was read ahead with the
    bucket's (the bucket is resolved first) leaves nothing behind: a later request on the
    same connection that reads the object (a CopyObject's source, after an overwrite)
    reads it anew, never the refused request's record."""
    s3, _ = gateway
    await asyncio.to_thread(s3.put_object, Bucket=bucket, Key="src", Body=b"old")
    creds = s3._request_signer._credentials.get_frozen_credentials()  # noqa: SLF001
    host = s3.meta.endpoint_url.removeprefix("http://")

    def send(conn: http.client.HTTPConnection, method: str, path: str, secret: str,
             headers: dict[str, str]) -> int:
        req = AWSRequest(method, f"http://{host}{path}", data=b"", headers={
            **headers, "x-amz-content-sha256": hashlib.sha256(b"").hexdigest()})
        SigV4Auth(Credentials(creds.access_key, secret), "s3", "us-east-1").add_auth(req)
        conn.request(method, path, body=b"", headers=dict(req.headers))
        answer = conn.getresponse()
        answer.read()
        return answer.status

    def on_one_connection() -> tuple[int, int]:
        conn = http.client.HTTPConnection(host, timeout=30)
        try:  # refused by authentication: nothing read the object's record read ahead
            refused = send(conn, "GET", f"/{bucket}/src", "wrong" + creds.secret_key, {})
            s3.put_object(Bucket=bucket, Key="src", Body=b"new")  # (another connection)
            copied = send(conn, "PUT", f"/{bucket}/dst", creds.secret_key,
                          {"x-amz-copy-source": f"/{bucket}/src"})
            return refused, copied
        finally:
            conn.close()

    assert await asyncio.to_thread(on_one_connection) == (403, 200)
    got = await asyncio.to_thread(lambda: s3.get_object(Bucket=bucket, Key="dst")["Body"]
                                  .read())
    assert got == b"new"


async def test_round_trips_per_listing_page(gateway: tuple[Any, RecordingStore],
                                            bucket: str) -> None:
    s3, store = gateway
    await asyncio.to_thread(s3.list_objects_v2, Bucket=bucket)  # warm caches
    calls, trips = await _measure(store, s3.list_objects_v2, Bucket=bucket, MaxKeys=1000)
    assert (calls, trips) == ([("get", "B"), ("range", "O")], 2)


# --- the cached bucket record (a PutObject in one round trip) never acts stale ---------

BODY = os.urandom(4096)


@pytest.fixture
async def other() -> AsyncIterator[BucketService]:
    """The bucket service of another gateway (its own etcd connection)."""
    store = await EtcdStore.open(tuple(os.environ["TESSERA_ETCD_ENDPOINTS"].split(",")), session_tls())
    try:
        yield BucketService(store, "us-east-1")
    finally:
        await store.close()


async def _warm(s3: Any, bucket: str) -> None:
    """A PutObject through the gateway: its bucket record is cached from then on."""
    await asyncio.to_thread(s3.put_object, Bucket=bucket, Key="warm", Body=BODY)
    await asyncio.to_thread(s3.put_object, Bucket=bucket, Key="warm", Body=BODY)


async def test_versioning_enabled_elsewhere_is_applied(gateway: tuple[Any, RecordingStore],
                                                       bucket: str, other: BucketService
                                                       ) -> None:
    s3, store = gateway
    await _warm(s3, bucket)
    owner = (await other.get_any(bucket)).tenant
    await other.update(owner, bucket, versioning="Enabled")
    calls, trips = await _measure(store, s3.put_object, Bucket=bucket, Key="v", Body=BODY)
    # the commit on the cached record failed its compare; the request ran again on a read
    # (a versioned bucket's PUT also reads the key's versions: the null version)
    assert (calls, trips) == ([("txn", "O"), ("get", "B"), ("range", "V"), ("txn", "O")], 4)
    listed = await asyncio.to_thread(s3.list_object_versions, Bucket=bucket, Prefix="v")
    [version] = listed["Versions"]
    assert version["VersionId"] != "null"
    # the body, read whole by the first run, was replayed to the second
    got = await asyncio.to_thread(lambda: s3.get_object(Bucket=bucket, Key="v")["Body"].read())
    assert got == BODY
    calls, trips = await _measure(store, s3.put_object, Bucket=bucket, Key="v2", Body=BODY)
    assert (calls, trips) == ([("range", "V"), ("txn", "O")], 2)  # the fresh record cached


async def test_policy_set_elsewhere_refuses_the_put(gateway: tuple[Any, RecordingStore],
                                                    bucket: str, other: BucketService
                                                    ) -> None:
    s3, store = gateway
    await _warm(s3, bucket)
    owner = (await other.get_any(bucket)).tenant
    deny = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
         "Resource": f"arn:aws:s3:::{bucket}/*"}]}
    await other.update(owner, bucket, policy=json.dumps(deny))
    with pytest.raises(ClientError) as refused:
        await asyncio.to_thread(s3.put_object, Bucket=bucket, Key="denied", Body=BODY)
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    with pytest.raises(ClientError):
        await asyncio.to_thread(s3.head_object, Bucket=bucket, Key="denied")
    # the gateway now holds the denying record; the policy goes away elsewhere: the cached
    # refusal is checked against a fresh read, and the request runs again and succeeds
    await other.update(owner, bucket, policy=None)
    calls, trips = await _measure(store, s3.put_object, Bucket=bucket, Key="allowed", Body=BODY)
    assert (calls, trips) == ([("get", "B"), ("txn", "O")], 2)
    got = await asyncio.to_thread(lambda: s3.get_object(Bucket=bucket, Key="allowed")["Body"]
                                  .read())
    assert got == BODY


async def test_bucket_deleted_elsewhere(gateway: tuple[Any, RecordingStore], bucket: str,
                                        other: BucketService) -> None:
    s3, store = gateway
    await _warm(s3, bucket)
    await asyncio.to_thread(s3.delete_object, Bucket=bucket, Key="warm")
    await other.delete(await other.get_any(bucket))
    with pytest.raises(ClientError) as refused:
        await asyncio.to_thread(s3.put_object, Bucket=bucket, Key="late", Body=BODY)
    assert refused.value.response["Error"]["Code"] == "NoSuchBucket"


async def test_a_delete_that_lost_its_commit_reads_anew(gateway: tuple[Any, RecordingStore],
                                                        bucket: str) -> None:
    """A DeleteObject whose commit loses to an overwrite made after its read-ahead retries
    on a fresh read (`ahead = None` in `ObjectEdits.delete`): the overwrite is deleted,
    once. Kept reusing the read-ahead record, its compare would fail for ever."""
    s3, store = gateway
    await asyncio.to_thread(s3.put_object, Bucket=bucket, Key="raced", Body=b"first")
    commits: list[Txn] = []
    plain = store.txn

    async def racing(txn: Txn) -> bool:
        if any(k.startswith(b"O") for k in txn.compares):
            commits.append(txn)
            assert len(commits) <= 3, "the delete keeps committing on a stale record"
            if len(commits) == 1:  # the overwrite lands between the read and the commit
                await asyncio.to_thread(s3.put_object, Bucket=bucket, Key="raced",
                                        Body=b"second")
        return await plain(txn)

    store.txn = racing  # type: ignore[method-assign]
    try:
        await asyncio.to_thread(s3.delete_object, Bucket=bucket, Key="raced")
    finally:
        del store.txn
    assert len(commits) == 2
    with pytest.raises(ClientError) as gone:
        await asyncio.to_thread(s3.head_object, Bucket=bucket, Key="raced")
    assert gone.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
