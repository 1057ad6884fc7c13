"""etcd backend of the metadata interface, over etcd's gRPC API (grpc.aio, aetcd's stubs).

Item.revision is etcd's `mod_revision`, a cluster-wide counter like the SQLite backend's,
so compare-and-swap works the same way (revision 0 = absent: an absent key compares as
mod_revision 0). Reads are linearizable (etcd's default), so a write through one gateway is
seen by the next read through any other. Endpoints are tried in turn: a member that cannot
be connected to is skipped. A write whose connection broke after it was sent is not retried
(it may have applied; the caller sees the error), reads are. See docs/ARCHITECTURE.md,
"Metadata on etcd", for why gRPC (it replaced the v3 JSON gateway: 6x less CPU per page).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import grpc
import msgpack
from aetcd import rpc  # the generated etcd v3 stubs (etcdserverpb), nothing else of aetcd

from storage.errors import StorageError
from storage.keyspace import lease_key, unpack
from storage.metadata import Item, Txn, prefix_end

log = logging.getLogger("tessera.metadata.etcd")

LEASE_FORMAT_VERSION = 1
REQUEST_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 2.0
CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", -1),  # a listing page or txn answer may exceed 4 MiB
    ("grpc.enable_http_proxy", 0),  # members are reached directly, whatever $http_proxy says
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 1000),  # also the least connect timeout
    ("grpc.max_reconnect_backoff_ms", 2000),  # a member back from the dead is used within 2 s
)
_READY = grpc.ChannelConnectivity.READY
_FAILING = grpc.ChannelConnectivity.TRANSIENT_FAILURE
_MOD, _EQUAL = rpc.Compare.CompareTarget.MOD, rpc.Compare.CompareResult.EQUAL


class EtcdError(StorageError):
    """etcd refused a request or no endpoint answered."""


@dataclass(frozen=True)
class WatchEvent:
    """One change under a watched prefix; `value` is empty when `deleted`."""

    key: bytes
    value: bytes
    revision: int
    deleted: bool


def _item(kv: Any) -> Item:
    return Item(kv.key, kv.value, kv.mod_revision)


def grpc_target(endpoint: str) -> tuple[str, bool]:
    """`http[s]://host:port` (etcd's client URL, 2379 if no port) -> (gRPC target, TLS?)."""
    url = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    if url.scheme not in ("http", "https") or not url.hostname:
        raise EtcdError(f"etcd endpoint {endpoint!r} is not an http(s)://host:port URL")
    host = f"[{url.hostname}]" if ":" in url.hostname else url.hostname
    return f"{host}:{url.port or 2379}", url.scheme == "https"


def _not_sent(exc: grpc.aio.AioRpcError) -> bool:
    """The call failed before reaching the member (no connection): safe to send elsewhere."""
    details = (exc.details() or "").lower()
    return exc.code() == grpc.StatusCode.UNAVAILABLE and (
        "failed to connect" in details or "connection refused" in details
        or "no leader" in details)


class _Member:
    """One endpoint: its gRPC channel (connected lazily, reconnected by gRPC) and stubs."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        target, tls = grpc_target(endpoint)
        self.channel = (grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(),
                                                options=CHANNEL_OPTIONS) if tls else
                        grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS))
        self.kv = rpc.KVStub(self.channel)
        self.lease = rpc.LeaseStub(self.channel)
        self.watch = rpc.WatchStub(self.channel)
        self.maintenance = rpc.MaintenanceStub(self.channel)

    def failing(self) -> bool:
        return self.channel.get_state() == _FAILING

    async def connected(self, timeout_s: float) -> bool:
        """True once the channel is READY; False when connecting fails or takes too long."""
        state = self.channel.get_state(try_to_connect=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        seen_failure = False
        while state != _READY:
            if state == _FAILING:
                if seen_failure:
                    return False
                seen_failure = True  # one reconnect attempt (the backoff is at most 2 s)
            left = deadline - loop.time()
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(self.channel.wait_for_state_change(state), left)
            except TimeoutError:
                return False
            state = self.channel.get_state(try_to_connect=True)
        return True


class EtcdStore:
    """MetadataStore on an etcd cluster, plus worker leases and a prefix watch."""

    def __init__(self, endpoints: tuple[str, ...]) -> None:
        self._endpoints = endpoints
        self._members = [_Member(e) for e in endpoints]
        self._current = 0
        self.round_trips = 0  # requests sent to etcd (benchmarks and tests count them)
        self._leases: dict[bytes, tuple[str, int]] = {}  # key -> (holder, lease id)
        self.server_version = ""

    @classmethod
    async def open(cls, endpoints: tuple[str, ...] | list[str]) -> EtcdStore:
        """Connect, and read the server version from the first member that answers."""
        eps = tuple(e.rstrip("/") for e in endpoints)
        if not eps:
            raise EtcdError("metadata backend etcd needs at least one endpoint (etcd_endpoints)")
        store = cls(eps)
        try:
            status = await store._call("maintenance", "Status", rpc.StatusRequest(),
                                       idempotent=True)
        except BaseException:
            await store._close_channels()
            raise
        store.server_version = str(status.version)
        return store

    def _order(self) -> list[int]:
        """Members to try: the current one first, those whose channel is failing last."""
        n = len(self._members)
        order = [(self._current + i) % n for i in range(n)]
        return sorted(order, key=lambda i: self._members[i].failing())

    async def _reach(self, m: _Member, errors: list[str]) -> bool:
        """Whether member `m` can take a request now (counted as a round trip); if not, why
        goes to `errors` (nothing was sent, so even a write may go to the next member)."""
        if not await m.connected(CONNECT_TIMEOUT_S):
            errors.append(f"{m.endpoint}: cannot connect")
            return False
        self.round_trips += 1
        return True

    async def _call(self, service: str, method: str, request: Any, idempotent: bool) -> Any:
        """One unary RPC, failing over to the next member when one is unreachable."""
        errors: list[str] = []
        for idx in self._order():
            m = self._members[idx]
            if not await self._reach(m, errors):
                continue
            try:
                answer = await getattr(getattr(m, service), method)(
                    request, timeout=REQUEST_TIMEOUT_S)
            except grpc.aio.AioRpcError as exc:
                text = f"{m.endpoint}: {exc.code().name} {exc.details()}"
                broken = exc.code() in (grpc.StatusCode.UNAVAILABLE,
                                        grpc.StatusCode.DEADLINE_EXCEEDED)
                if broken and idx == self._current:
                    # suspect (cut off, no leader, hung): the next call starts elsewhere,
                    # even when this one is a write that cannot be retried
                    self._current = (idx + 1) % len(self._members)
                # a read may also meet a stream reset while a member restarts
                retry = _not_sent(exc) or (idempotent and (broken or exc.code() in (
                    grpc.StatusCode.CANCELLED, grpc.StatusCode.INTERNAL)))
                if retry:
                    errors.append(text)
                    continue
                raise EtcdError(f"etcd {method} failed on {text}") from exc
            if idx != self._current:
                log.info("etcd: now using endpoint %s", m.endpoint)
                self._current = idx
            return answer
        raise EtcdError(f"no etcd endpoint answered {method}: " + "; ".join(errors))

    # --- MetadataStore ---------------------------------------------------------------

    async def get(self, key: bytes) -> Item | None:
        answer = await self._call("kv", "Range", rpc.RangeRequest(key=key), idempotent=True)
        return _item(answer.kvs[0]) if answer.kvs else None

    async def put(self, key: bytes, value: bytes) -> int:
        answer = await self._call("kv", "Put", rpc.PutRequest(key=key, value=value),
                                  idempotent=False)
        return int(answer.header.revision)

    async def scrub(self) -> None:
        """Compact history up to now, so overwritten or deleted values (a shredded tenant's
        wrapped keys) no longer exist in etcd's MVCC store."""
        head = await self._call("kv", "Range", rpc.RangeRequest(key=b"\x00"), idempotent=True)
        try:
            await self._call("kv", "Compact", rpc.CompactionRequest(
                revision=head.header.revision, physical=True), idempotent=True)
        except EtcdError as exc:
            if "compacted" not in str(exc):  # already compacted at or past it: nothing to do
                raise

    async def delete(self, key: bytes) -> bool:
        answer = await self._call("kv", "DeleteRange", rpc.DeleteRangeRequest(key=key),
                                  idempotent=False)
        return int(answer.deleted) > 0

    async def range(self, start: bytes, end: bytes, limit: int = 1000,
                    reverse: bool = False) -> list[Item]:
        if start >= end or limit <= 0:
            return []
        start = start or b"\x00"  # etcd keys are never empty; "" is not a valid range start
        request = rpc.RangeRequest(key=start, range_end=end, limit=limit)
        if reverse:
            request.sort_order = rpc.RangeRequest.SortOrder.DESCEND
            request.sort_target = rpc.RangeRequest.SortTarget.KEY
        answer = await self._call("kv", "Range", request, idempotent=True)
        return [_item(kv) for kv in answer.kvs]

    async def txn(self, txn: Txn) -> bool:
        done, _ = await self.txn_or_read(txn, ())
        return done

    async def txn_or_read(self, txn: Txn, reads: tuple[bytes, ...]
                          ) -> tuple[bool, dict[bytes, Item | None]]:
        """One etcd Txn: the puts and deletes on success, ranges of `reads` on failure."""
        deletes = set(txn.deletes)
        ops = [rpc.RequestOp(request_put=rpc.PutRequest(key=k, value=v))
               for k, v in txn.puts.items() if k not in deletes]  # put-then-delete = deleted
        ops += [rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=k))
                for k in dict.fromkeys(txn.deletes)]
        request = rpc.TxnRequest(
            compare=[_compare_rev(k, rev) for k, rev in txn.compares.items()], success=ops,
            failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=k)) for k in reads])
        answer = await self._call("kv", "Txn", request, idempotent=False)
        if answer.succeeded:
            return True, {}
        if len(answer.responses) != len(reads):
            raise EtcdError(f"etcd txn: {len(answer.responses)} answers to {len(reads)} reads")
        seen: dict[bytes, Item | None] = {}
        for key, one in zip(reads, answer.responses, strict=True):
            kvs = one.response_range.kvs
            seen[key] = _item(kvs[0]) if kvs else None
        return False, seen

    async def close(self) -> None:
        for key, (holder, _) in list(self._leases.items()):
            name = unpack(key)[1]
            try:
                await self.release(name, holder)
            except StorageError as exc:
                log.warning("etcd: could not release lease %r: %s", name, exc)
        await self._close_channels()

    async def _close_channels(self) -> None:
        for m in self._members:
            await m.channel.close()

    # --- leases for background workers ---------------------------------------------

    async def acquire_lease(self, name: str, holder: str, ttl_s: int) -> bool:
        """Take `(L, name)` for `holder` for `ttl_s` seconds unless someone else holds it.

        The key is attached to an etcd lease, so it vanishes by itself when the holder
        stops renewing (its gateway died); the next acquire then succeeds elsewhere.
        """
        key = lease_key(name)
        mine = self._leases.get(key)
        if mine is not None and mine[0] == holder and await self.renew(name, holder):
            return True
        grant = await self._call("lease", "LeaseGrant",
                                 rpc.LeaseGrantRequest(TTL=max(1, int(ttl_s))), idempotent=False)
        lease_id = int(grant.ID)
        value = msgpack.packb({"fv": LEASE_FORMAT_VERSION, "holder": holder, "ttl": ttl_s},
                              use_bin_type=True)
        request = rpc.TxnRequest(
            compare=[_compare_rev(key, 0)],
            success=[rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value,
                                                              lease=lease_id))])
        answer = await self._call("kv", "Txn", request, idempotent=False)
        if answer.succeeded:
            self._leases[key] = (holder, lease_id)
            return True
        await self._revoke(lease_id)
        return False

    async def lease_holder(self, name: str) -> str | None:
        item = await self.get(lease_key(name))
        if item is None:
            return None
        return str(msgpack.unpackb(item.value, raw=False).get("holder"))

    async def renew(self, name: str, holder: str) -> bool:
        """Extend a lease this store acquired; False when it has expired (lost)."""
        key = lease_key(name)
        mine = self._leases.get(key)
        if mine is None or mine[0] != holder:
            return False
        ttl = await self._keepalive(mine[1])
        if ttl <= 0:
            self._leases.pop(key, None)
            return False
        return True

    async def _keepalive(self, lease_id: int) -> int:
        """One keep-alive on etcd's (streaming) LeaseKeepAlive: the lease's new TTL, 0 = gone."""
        errors: list[str] = []
        for idx in self._order():
            m = self._members[idx]
            if not await self._reach(m, errors):
                continue
            call = m.lease.LeaseKeepAlive(timeout=REQUEST_TIMEOUT_S)
            try:
                await call.write(rpc.LeaseKeepAliveRequest(ID=lease_id))
                await call.done_writing()
                answer = await call.read()
            except grpc.aio.AioRpcError as exc:  # idempotent: try the next member
                errors.append(f"{m.endpoint}: {exc.code().name} {exc.details()}")
                continue
            finally:
                call.cancel()
            if answer is grpc.aio.EOF:
                errors.append(f"{m.endpoint}: keep-alive stream closed")
                continue
            return int(answer.TTL)
        raise EtcdError("no etcd endpoint answered LeaseKeepAlive: " + "; ".join(errors))

    async def release(self, name: str, holder: str) -> bool:
        """Give the lease up now (the key is deleted with it)."""
        key = lease_key(name)
        mine = self._leases.pop(key, None)
        if mine is None or mine[0] != holder:
            return False
        await self._revoke(mine[1])
        return True

    async def _revoke(self, lease_id: int) -> None:
        try:
            await self._call("lease", "LeaseRevoke", rpc.LeaseRevokeRequest(ID=lease_id),
                             idempotent=True)
        except EtcdError as exc:
            if "requested lease not found" not in str(exc):
                raise

    # --- watch ----------------------------------------------------------------------

    async def watch_prefix(self, prefix: bytes,
                           start_revision: int = 0) -> AsyncIterator[list[WatchEvent]]:
        """Yield batches of changes under `prefix` as they commit, forever.

        Resumes after the last seen revision on another endpoint when a stream breaks, so
        no change is missed (unless etcd compacted past it: then it restarts from now and
        the caller should re-read the prefix, which it is told by an empty batch).
        """
        next_rev = start_revision
        failures = 0
        while True:
            m = self._members[self._current % len(self._members)]
            create = rpc.WatchCreateRequest(key=prefix, range_end=prefix_end(prefix),
                                            start_revision=next_rev)
            call = m.watch.Watch()
            try:
                await call.write(rpc.WatchRequest(create_request=create))
                async for answer in call:
                    failures = 0
                    if answer.compact_revision:
                        next_rev = 0
                        yield []
                        break
                    if answer.canceled:
                        break
                    events = [_event(e) for e in answer.events]
                    if events:
                        next_rev = events[-1].revision + 1
                        yield events
            except grpc.aio.AioRpcError as exc:
                log.info("etcd watch on %s broke: %s %s", m.endpoint, exc.code().name,
                         exc.details())
            finally:
                call.cancel()
            failures += 1
            self._current = (self._current + 1) % len(self._members)
            if failures >= len(self._members):
                await asyncio.sleep(min(1.0, 0.1 * failures))

    async def poll_prefix(self, prefix: bytes, interval_s: float = 1.0,
                          limit: int = 1000) -> AsyncIterator[list[Item]]:
        """Yield the items under `prefix` whenever any of them changed (polling fallback)."""
        last: tuple[tuple[bytes, int], ...] | None = None
        while True:
            items = await self.range(prefix, prefix_end(prefix), limit)
            sig = tuple((i.key, i.revision) for i in items)
            if sig != last:
                last = sig
                yield items
            await asyncio.sleep(interval_s)


def _compare_rev(key: bytes, rev: int) -> Any:
    """key's mod_revision == rev; an absent key has mod_revision 0."""
    return rpc.Compare(key=key, target=_MOD, result=_EQUAL, mod_revision=rev)


def _event(e: Any) -> WatchEvent:
    return WatchEvent(e.kv.key, e.kv.value, e.kv.mod_revision,
                      e.type == rpc.Event.EventType.DELETE)
