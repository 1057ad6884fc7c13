"""Buckets: global names, each owned by one tenant; every access checks the owner."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from storage import inline_bodies
from storage.errors import (
    AccessDenied,
    BucketBusy,
    BucketExists,
    BucketNotEmpty,
    BucketNotFound,
    NotFound,
    StorageError,
)
from storage.keyspace import (
    bucket_key,
    bucket_prefixes,
    object_prefix,
    span,
    tenant_bucket_key,
    tenant_bucket_prefix,
    tenant_key,
    unpack,
    version_left_prefix,
    version_prefix,
)
from storage.metadata import Item, MetadataStore, Txn
from storage.records import Bucket
from storage.tenant_state import compare_of

DELETING = "deleting"  # config entry: when a DeleteBucket marked the bucket (see `delete`)
DELETING_S = 60.0  # a mark older than this (its DeleteBucket crashed) no longer blocks writes
CACHE_MAX = 10_000  # bucket records kept by the cache (emptied when full)


class BucketService:
    def __init__(self, meta: MetadataStore, region: str) -> None:
        self._meta = meta
        self._region = region
        # The last record read of each bucket (stores whose reads are network round trips:
        # etcd). Never trusted on its own: see `cached`.
        self._cache: dict[str, Item] | None = {} if getattr(meta, "cache_buckets", False) \
            else None
        # Each bucket's last record bytes and their decoded prototype (see `_record`).
        self._decoded: dict[bytes, tuple[bytes, Bucket]] = {}

    async def create(self, tenant: str, name: str, region: str | None = None,
                     versioning: str = "", config: dict[str, Any] | None = None,
                     owner: Item | None = None) -> Bucket:
        """A new bucket of `tenant`, whose record is compared (`tenant_state.compare_of`): refused
        (AccessDenied as for an account AWS closed; TenantDeleting, TenantShredding,
        KeyUnavailable) unless the tenant is active, so none outlives a tenant delete.
        `owner`: the tenant record as the request's auth check cached it (no read here;
        a stale one fails the compare, whose failure reads the fresh one back; one that
        refuses is read afresh before the refusal)."""
        b = Bucket(name=name, tenant=tenant, created=time.time(), region=region or self._region,
                   versioning=versioning, config=dict(config or {}))
        tk = tenant_key(tenant)
        item, fresh = (owner, False) if owner is not None else (await self._meta.get(tk), True)
        for _ in range(8):  # again only when the tenant record alone moved (an edit)
            try:
                owner_rec = compare_of(tenant, item)
            except StorageError as exc:
                if not fresh:  # the cached record may predate an unmark or unfence
                    item, fresh = await self._meta.get(tk), True
                    continue
                if isinstance(exc, NotFound):  # its credential outlived it by a request
                    raise AccessDenied(str(exc)) from exc
                raise
            done, seen = await self._meta.txn_or_read(
                Txn(compares={bucket_key(name): 0, **owner_rec},
                    puts={bucket_key(name): b.encode(), tenant_bucket_key(tenant, name): b""}),
                (bucket_key(name), tk))
            if done:
                return b
            existing = seen[bucket_key(name)]
            if existing is not None:
                raise BucketExists(name, owned_by_caller=Bucket.decode(
                    existing.value).tenant == tenant)
            item, fresh = seen[tk], True
        raise BucketBusy(name)  # the tenant record kept changing: S3 OperationAborted, retry

    async def get_any(self, name: str, current: str | None = None, bodies: bool = False
                      ) -> Bucket:
        """The bucket record whoever owns it (internal use: workers, admin). `current`: the
        key whose current record the request reads first (GET, HEAD, DeleteObject), read in
        the same request on a store that allows it (`inline_bodies.read_ahead`), with its
        first inline bodies if `bodies` (a GET's)."""
        if current is not None and inline_bodies.enabled(self._meta):
            item = await inline_bodies.read_ahead(self._meta, bucket_key(name), name, current,
                                                  bodies)
        else:
            item = await self._meta.get(bucket_key(name))
        if self._cache is not None:
            self._remember(name, item)
        if item is None:
            raise BucketNotFound(name)
        return self._record(item)

    def cached(self, name: str) -> Bucket | None:
        """The bucket's record as last read here, marked `cached` (None: not cached, or the
        store reads cheaply). Only for a request that ends in a commit: the commit compares
        the record's revision, and when it changed raises BucketChanged (objects.commit),
        so the request runs again on a fresh read; a request that fails on a cached record
        is also run again if the record changed (gateway/s3/server.py)."""
        item = self._cache.get(name) if self._cache is not None else None
        if item is None:
            return None
        b = self._record(item)
        b.cached = True
        return b

    def forget(self, name: str) -> None:
        """Drop the bucket's cached record (this gateway changed or deleted it)."""
        if self._cache is not None:
            self._cache.pop(name, None)

    def _remember(self, name: str, item: Item | None) -> None:
        assert self._cache is not None
        if item is None:
            self._cache.pop(name, None)
            return
        if len(self._cache) >= CACHE_MAX and name not in self._cache:
            self._cache.clear()
        self._cache[name] = item

    async def get(self, tenant: str, name: str) -> Bucket:
        """The bucket if the tenant owns it; AccessDenied if another tenant does."""
        return self.owned(await self.get_any(name), tenant)

    def from_item(self, tenant: str, name: str, item: Item | None) -> Bucket:
        """What `get` returns, from the bucket's record read elsewhere (None = absent)."""
        if item is None:
            raise BucketNotFound(name)
        return self.owned(self._record(item), tenant)

    @staticmethod
    def owned(b: Bucket, tenant: str) -> Bucket:
        """`b` if `tenant` owns it; AccessDenied if another tenant does."""
        if b.tenant != tenant:
            raise AccessDenied(f"bucket {b.name!r} belongs to another tenant")
        return b

    def _record(self, item: Item) -> Bucket:
        """The record `item` holds, decoded once per stored value: every caller gets its own
        copy of the decoded prototype (which is never handed out), with its own `config`
        dict, so setting fields or config entries never reaches another caller (the values
        inside `config` are shared: nothing edits them in place; `update` decodes its own)."""
        name, value = item.key, item.value
        hit = self._decoded.get(name)
        if hit is None or hit[0] != value:
            proto = Bucket.decode(value)
            if len(self._decoded) >= CACHE_MAX:
                self._decoded.clear()
            self._decoded[name] = hit = (value, proto)
        b = object.__new__(Bucket)
        b.__dict__.update(hit[1].__dict__)
        b.config = dict(b.config)
        b.revision = item.revision
        return b

    def guard(self, b: Bucket, compares: dict[bytes, int]) -> None:
        """Make the transaction `compares` belongs to fail if bucket `b` changed (deleted,
        versioning or configuration) since it was read: a commit decided on `b` then holds."""
        mark = b.config.get(DELETING)
        if mark is not None and time.time() - float(mark) < DELETING_S:
            raise BucketBusy(b.name)
        if b.revision:
            compares[bucket_key(b.name)] = b.revision

    async def list(self, tenant: str) -> list[Bucket]:
        items = await self._meta.range(*span(tenant_bucket_prefix(tenant)), 100000)
        names = [unpack(i.key)[2] for i in items]
        out = []
        for n in names:
            item = await self._meta.get(bucket_key(n))
            if item is not None:
                out.append(Bucket.decode(item.value))
        return out

    async def ensure_empty(self, b: Bucket) -> None:
        """BucketNotEmpty if the bucket holds an object or a version (uploads aside)."""
        for prefix in (object_prefix(b.name), version_prefix(b.name)):
            if await self._meta.range(*span(prefix), limit=1):
                raise BucketNotEmpty(b.name)

    async def delete(self, b: Bucket) -> None:
        """Delete an empty bucket (BucketNotEmpty otherwise); BucketNotFound if it is gone.

        A write commits under `guard` (the bucket record's revision) without changing that
        record, so checking emptiness and then deleting the record would let a write that
        commits in between survive the bucket (and reappear in a bucket of the same name).
        So the record is first marked `deleting` (a new revision: a write that read it before
        fails its commit, and `guard` refuses one that reads it after, as it refuses another
        DeleteBucket), then emptiness is checked, then the record is deleted (no one else may
        delete or replace a marked record), or unmarked if the bucket is not empty. A mark
        left by a crash expires after DELETING_S.
        """
        name = b.name
        for prefix in bucket_prefixes(name):
            if await self._meta.range(*span(prefix), limit=1):
                raise BucketNotEmpty(name)
        cur = b
        while True:
            self.guard(cur, {})  # BucketBusy if another DeleteBucket marked it
            marked = Bucket.decode(cur.encode())
            marked.config[DELETING] = time.time()
            if await self._meta.txn(Txn(compares={bucket_key(name): cur.revision},
                                        puts={bucket_key(name): marked.encode()})):
                break
            cur = self.owned(await self.get_any(name), b.tenant)  # changed meanwhile
        for prefix in bucket_prefixes(name):
            if await self._meta.range(*span(prefix), limit=1):
                await self.update(b.tenant, name, **{DELETING: None})
                raise BucketNotEmpty(name)
        while left := await self._meta.range(*span(version_left_prefix(name)), limit=100):
            await self._meta.txn(Txn(deletes=tuple(i.key for i in left)))  # no delete can
            # add one now: it would commit under `guard`, which refuses the marked record
        await self._meta.txn(Txn(deletes=(bucket_key(name), tenant_bucket_key(b.tenant, name))))
        self.forget(name)

    async def update(self, tenant: str, name: str, check: Callable[[Bucket], None] | None = None,
                     **changes: Any) -> Bucket:
        """Compare-and-swap update of bucket fields (versioning) or config entries. `check`
        sees the record the swap compares and may refuse: a rule over two fields (Object
        Lock needs versioning Enabled) holds against a change racing through another
        gateway."""
        while True:
            item = await self._meta.get(bucket_key(name))
            if item is None:
                raise BucketNotFound(name)
            b = Bucket.decode(item.value)
            self.owned(b, tenant)
            if check is not None:
                check(b)
            for k, v in changes.items():
                if k == "versioning":
                    b.versioning = v
                elif v is None:
                    b.config.pop(k, None)
                else:
                    b.config[k] = v
            if await self._meta.txn(Txn(compares={item.key: item.revision},
                                        puts={item.key: b.encode()})):
                self.forget(name)
                return b
