"""etcd backend of the metadata interface: keys over etcd's gRPC KV service (grpcio,
storage/metadata/etcd_grpc.py); leases, watches and member status over its v3 JSON gateway
(grpc-gateway) with aiohttp, off the request path.

Item.revision is etcd's `mod_revision`, a cluster-wide counter like the SQLite backend's,
so compare-and-swap works the same way (revision 0 = absent: an absent key compares as
mod_revision 0). Reads are linearizable (etcd's default), so a write through one gateway is
seen by the next read through any other. Requests go to the Raft leader (found at open and
again, in the background, whenever an answer shows a new Raft term), so no follower forwards them; a connection
failure moves to the next member. A write whose connection broke after it was sent is not retried
(it may have applied; the caller sees the error), reads are. See docs/ARCHITECTURE.md,
"Metadata on etcd".
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import msgpack

from storage.errors import StorageError, StorageFull
from storage.keyspace import AUTH_CHANGE, is_auth_record, lease_key, unpack
from storage.metadata import Item, Txn, prefix_end
from storage.metadata.etcd_batch import (
    NotSent,
    TxnBatcher,
    Wanted,
    b64,
    compare_rev,
    item_of,
    unb64,
)
from storage.metadata.etcd_grpc import REQUEST_TIMEOUT_S, GrpcKV, member_unwell, try_elsewhere
from storage.metadata.etcd_reads import ReadBatcher
from storage.metadata.etcd_share import CommitServer, SharedCommits
from storage.metadata.etcd_stamp import WatchedStamp
from storage.metadata.etcd_tls import EtcdClientTLS
from storage.metadata.etcd_wire import txn_request
from storage.metadata.etcdpb import etcd_wire_pb2 as pb
from storage.metadata.fence import check, fenced

NOSPACE = "mvcc: database space exceeded"  # etcd past --quota-backend-bytes (or its disk)

log = logging.getLogger("tessera.metadata.etcd")

LEASE_FORMAT_VERSION = 1
CONNECT_TIMEOUT_S = 2.0
# a watch on a member that loses its leader (cut off from the cluster) is ended by etcd
# instead of staying open and silent (etcd-io/etcd#7593, #10819); grpc-gateway passes
# `Grpc-Metadata-*` headers on as gRPC metadata
HAS_LEADER = {"Grpc-Metadata-hasleader": "true"}
STATUS_TIMEOUT = aiohttp.ClientTimeout(total=2.0)  # a leader lookup never waits long on one member


class EtcdError(StorageError):
    """etcd refused a request or no endpoint answered."""


@dataclass(frozen=True)
class WatchEvent:
    """One change under a watched prefix; `value` is empty when `deleted`."""

    key: bytes
    value: bytes
    revision: int
    deleted: bool


def api_prefix(server_version: str) -> str:
    """The JSON gateway's path for an etcd server version: 3.4+ '/v3', 3.3 '/v3beta'."""
    try:
        major, minor = (int(x) for x in server_version.split(".")[:2])
    except ValueError:
        return "/v3"
    if (major, minor) >= (3, 4):
        return "/v3"
    if (major, minor) == (3, 3):
        return "/v3beta"
    return "/v3alpha"


class EtcdStore:
    """MetadataStore on an etcd cluster, plus worker leases and a prefix watch."""

    # Small objects' sealed bodies live under their own keys, not in the records every
    # listing scans (storage/inline_bodies.py).
    inline_apart = True
    # A read is a network round trip: the gateway keeps bucket records, and a PutObject
    # decides on the kept one, its commit comparing the revision (storage/buckets.py).
    cache_buckets = True
    # `auth_stamp` follows a watch: another gateway may learn of an auth write after it
    # returned, so TenantService.settled waits the caches' outer bound (SHORT_TTL_S)
    auth_stamp_exact = False

    def __init__(self, endpoints: tuple[str, ...], session: aiohttp.ClientSession,
                 prefix: str, tls: EtcdClientTLS | None = None) -> None:
        self._endpoints = endpoints
        self._session = session
        self._prefix = prefix
        self._current = 0
        self.round_trips = 0  # requests sent to etcd (benchmarks and tests count them)
        self._leases: dict[bytes, tuple[str, str]] = {}  # key -> (holder, lease id)
        self.server_version = ""
        self._term = 0  # the Raft term the leader was last looked up in (0: not yet)
        self._lookup: asyncio.Task[None] | None = None  # a leader lookup after an election
        self._kv = GrpcKV(endpoints, tls)
        self._batcher = TxnBatcher(self._txn_call)
        self._sharing: CommitServer | SharedCommits | None = None  # share_commits
        self._reads = ReadBatcher(self._read_call)
        self._stamp = WatchedStamp(self._read_stamp, self._stamp_changes)

    @classmethod
    async def open(cls, endpoints: tuple[str, ...] | list[str],
                   tls: EtcdClientTLS | None = None) -> EtcdStore:
        """Connect, and learn the JSON gateway path from the first member that answers.
        `tls`: the client certificate members that check clients (mutual TLS) require."""
        eps = tuple(e.rstrip("/") for e in endpoints)
        if not eps:
            raise EtcdError("metadata backend etcd needs at least one endpoint (etcd_endpoints)")
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
        # the CA store is read now, for both clients (gRPC's roots: etcd_grpc.trusted_roots)
        if tls is not None and not all(e.startswith("https://") for e in eps):
            raise EtcdError("etcd client certificate given but an endpoint is not https://")
        ctx = (tls.ssl_context() if tls is not None else ssl.create_default_context()
               if any(e.startswith("https://") for e in eps) else None)
        session = aiohttp.ClientSession(timeout=timeout,
                                        connector=aiohttp.TCPConnector(ssl=ctx or True))
        store = cls(eps, session, "/v3", tls)
        try:
            store.server_version = await store._version()
            store._prefix = api_prefix(store.server_version)
            await store._find_leader()
        except BaseException:
            store._kv.close()
            await session.close()
            raise
        return store

    @property
    def endpoints(self) -> tuple[str, ...]:
        """Every member's client URL, as configured."""
        return self._endpoints

    async def cluster_call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST a maintenance call that acts on the cluster (alarms) to whichever member
        answers (it is safe to repeat)."""
        return await self._call(path, body, idempotent=True)

    async def member_call(self, endpoint: str, path: str, body: dict[str, Any]
                          ) -> dict[str, Any]:
        """POST to one member's JSON gateway, no failover: the maintenance calls that act
        on a member (defragment, status) and not on the cluster."""
        try:
            async with self._session.post(f"{endpoint}{self._prefix}{path}", json=body) as r:
                data = await r.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise EtcdError(f"etcd {path} on {endpoint}: {exc or type(exc).__name__}") from None
        if r.status != 200 or not isinstance(data, dict) or "error" in data:
            msg = data.get("error") or data.get("message") if isinstance(data, dict) else None
            raise EtcdError(f"etcd {path} on {endpoint}: {msg or f'HTTP {r.status}'}")
        return data  # type: ignore[no-any-return]

    @property
    def endpoint(self) -> str:
        """The member requests go to now (the leader, unless it became unreachable)."""
        return self._endpoints[self._current]

    async def _find_leader(self) -> None:
        """Point requests at the Raft leader: a follower would forward each write to it (and
        ask it for a read index), which costs a hop and member CPU per request. Members are
        asked their status in turn until the leader answers; none answering changes nothing
        (requests then fail over as usual)."""
        n = len(self._endpoints)
        for i in range(n):
            idx = (self._current + i) % n
            self.round_trips += 1
            try:
                async with self._session.post(
                        f"{self._endpoints[idx]}{self._prefix}/maintenance/status", json={},
                        timeout=STATUS_TIMEOUT) as r:
                    data = await r.json(content_type=None)
                header = data["header"]
                if str(data.get("leader")) != str(header["member_id"]):
                    continue
            except (aiohttp.ClientError, TimeoutError, KeyError, TypeError, ValueError):
                continue
            self._term = max(self._term, int(header.get("raft_term", 0)))
            if idx != self._current:
                log.info("etcd: using the leader %s", self._endpoints[idx])
                self._current = idx
            return

    def _relook(self) -> None:
        """Look the leader up again in the background (one lookup at a time): the request
        that saw the new term answers at once; requests meanwhile go where they went (a
        follower still forwards them), and move to the leader when it is found."""
        if self._lookup is not None and not self._lookup.done():
            return
        self._lookup = asyncio.get_running_loop().create_task(self._relook_now(),
                                                              name="etcd-leader-lookup")

    async def _relook_now(self) -> None:
        try:
            await self._find_leader()
        except Exception as exc:  # noqa: BLE001 - requests still fail over on their own
            log.warning("etcd: leader lookup failed: %s", exc)

    async def settled(self) -> None:
        """Wait for a leader lookup in progress, if any (tests)."""
        if self._lookup is not None:
            await asyncio.shield(self._lookup)

    async def _version(self) -> str:
        errors = []
        for ep in self._endpoints:
            try:
                async with self._session.get(f"{ep}/version") as r:
                    body = await r.json(content_type=None)
                    return str(body["etcdserver"])
            except (aiohttp.ClientError, TimeoutError, KeyError, ValueError) as exc:
                errors.append(f"{ep}: {exc or type(exc).__name__}")
        raise EtcdError("no etcd endpoint answered: " + "; ".join(errors))

    async def _call(self, path: str, body: dict[str, Any], idempotent: bool) -> dict[str, Any]:
        """POST to the gateway, failing over to the next endpoint when one is unreachable."""
        errors = []
        n = len(self._endpoints)
        for i in range(n):
            idx = (self._current + i) % n
            url = f"{self._endpoints[idx]}{self._prefix}{path}"
            self.round_trips += 1
            try:
                async with self._session.post(url, json=body) as r:
                    try:
                        data = await r.json(content_type=None)
                    except ValueError:
                        data = None
            except aiohttp.ClientConnectorError as exc:  # never sent: safe to retry anywhere
                errors.append(f"{self._endpoints[idx]}: {exc}")
                continue
            except (aiohttp.ClientError, TimeoutError) as exc:
                if not idempotent:
                    raise EtcdError(f"etcd request {path} failed on {self._endpoints[idx]}: "
                                    f"{exc or type(exc).__name__}") from exc
                errors.append(f"{self._endpoints[idx]}: {exc or type(exc).__name__}")
                continue
            if not isinstance(data, dict):
                raise EtcdError(f"etcd {path}: unexpected answer (HTTP {r.status})")
            if r.status != 200 or "error" in data:
                msg = data.get("error") or data.get("message") or f"HTTP {r.status}"
                # code 14 = Unavailable (no leader on that member): try another member
                if data.get("code") == 14 and (idempotent or "no leader" in str(msg)):
                    errors.append(f"{self._endpoints[idx]}: {msg}")
                    continue
                raise EtcdError(f"etcd {path}: {msg}")
            self._answered(idx, int((data.get("header") or {}).get("raft_term", 0)))
            return data  # type: ignore[no-any-return]
        raise EtcdError(f"no etcd endpoint answered {path}: " + "; ".join(errors))

    def _answered(self, idx: int, term: int) -> None:
        """A member answered: requests stay on it, and a new Raft term looks the leader up."""
        if idx != self._current:
            log.info("etcd: now using endpoint %s", self._endpoints[idx])
            self._current = idx
        if term > self._term:  # an election since the leader was looked up:
            self._term = term  # (set first: concurrent answers do not look again)
            self._relook()  # found beside the requests, not inside this one

    async def _rpc(self, rpc: str, request: Any, idempotent: bool,
                   still: Wanted | None = None) -> Any:
        """One KV call over gRPC, failing over to the next member as `_call` does; before a
        fail-over, NotSent when `still` says the request is no longer wanted (a batch of
        forwarded commits: storage/metadata/etcd_batch.py)."""
        errors = []
        n = len(self._endpoints)
        for i in range(n):
            idx = (self._current + i) % n
            if i and still is not None and not still():  # no member got it so far
                raise NotSent(f"etcd {rpc} no longer wanted when failing over; not sent")
            self.round_trips += 1
            try:
                answer = await self._kv.call(idx, rpc, request, REQUEST_TIMEOUT_S)
            except grpc.RpcError as exc:
                msg = f"{exc.code().name}: {exc.details()}"
                if NOSPACE in (exc.details() or ""):  # the quota's alarm: every member refuses
                    raise StorageFull(f"etcd {rpc} refused: {msg} (free space, then `tessera "
                                      "metadata recover-space`: compact, defragment, disarm)"
                                      ) from None
                if not try_elsewhere(exc, idempotent):
                    if member_unwell(exc):  # (a write): the next call tries the next member
                        self._current = (idx + 1) % n  # and the leader is looked up again
                        self._relook()
                    raise EtcdError(f"etcd {rpc} failed on {self._endpoints[idx]}: {msg}") from None
                errors.append(f"{self._endpoints[idx]}: {msg}")
                continue
            self._answered(idx, answer.header.raft_term)
            return answer
        raise EtcdError(f"no etcd endpoint answered {rpc}: " + "; ".join(errors))

    async def _txn_call(self, request: bytes, still: Wanted | None) -> pb.TxnResponse:
        return await self._rpc("Txn", request, False, still)  # type: ignore[no-any-return]

    async def _read_call(self, request: pb.TxnRequest) -> pb.TxnResponse:
        return await self._rpc("Txn", request, idempotent=True)  # type: ignore[no-any-return]

    # --- MetadataStore ---------------------------------------------------------------

    async def get(self, key: bytes) -> Item | None:
        [data] = await self._reads.run((pb.RangeRequest(key=key),))  # (concurrent ones: one
        return item_of(data.kvs[0]) if data.kvs else None  # request, etcd_reads.py)

    async def put(self, key: bytes, value: bytes) -> int:
        if is_auth_record(key):
            data = await self._rpc("Txn", txn_request({}, {key: value, AUTH_CHANGE: b""}, (), ()),
                                   idempotent=False)
        else:
            data = await self._rpc("Put", pb.PutRequest(key=key, value=value), idempotent=False)
        return int(data.header.revision)

    async def scrub(self) -> None:
        """Compact history up to now, so overwritten or deleted values (a shredded tenant's
        wrapped keys) no longer exist in etcd's MVCC store."""
        head = await self._rpc("Range", pb.RangeRequest(key=b"\x00"), idempotent=True)
        try:
            await self._rpc("Compact", pb.CompactionRequest(revision=head.header.revision,
                                                            physical=True), idempotent=True)
        except EtcdError as exc:
            if "compacted" not in str(exc):  # already compacted at or past it: nothing to do
                raise

    async def delete(self, key: bytes) -> bool:
        if is_auth_record(key):
            answer = await self._rpc("Txn", txn_request({}, {AUTH_CHANGE: b""}, (key,), ()),
                                     idempotent=False)
            return int(answer.responses[1].response_delete_range.deleted) > 0
        data = await self._rpc("DeleteRange", pb.DeleteRangeRequest(key=key), idempotent=False)
        return int(data.deleted) > 0

    def auth_stamp_state(self) -> dict[str, object]:
        """The stamp watch's state in this process (`WatchedStamp.state`)."""
        return self._stamp.state()

    async def auth_stamp(self) -> int:
        """A number that changes whenever any gateway writes a tenant or access-key record:
        the mod_revision of AUTH_CHANGE, which every such write puts in its own
        transaction; from memory, kept current by a watch (`etcd_stamp.py`)."""
        return await self._stamp.get()

    async def _read_stamp(self) -> int:
        # a request of its own, never shared with requests' reads: the stamp's timed checks
        # stay apart from what requests cost (tests count both)
        data = await self._rpc("Range", pb.RangeRequest(key=AUTH_CHANGE), idempotent=True)
        return int(data.kvs[0].mod_revision) if data.kvs else 0

    async def _stamp_changes(self, on_created: Callable[[], None],
                             on_broken: Callable[[], None]) -> AsyncIterator[list[int]]:
        async for events in self.watch_prefix(AUTH_CHANGE, on_created=on_created,
                                              on_broken=on_broken):
            yield [e.revision for e in events]

    async def range(self, start: bytes, end: bytes, limit: int = 1000,
                    reverse: bool = False) -> list[Item]:
        if start >= end or limit <= 0:
            return []
        start = start or b"\x00"  # etcd keys are never empty; "" is not a valid range start
        request = pb.RangeRequest(key=start, range_end=end, limit=limit)
        if reverse:
            request.sort_order = pb.RangeRequest.DESCEND
            request.sort_target = pb.RangeRequest.KEY
        data = await self._rpc("Range", request, idempotent=True)
        return [item_of(kv) for kv in data.kvs]

    async def get_many(self, keys: tuple[bytes, ...]) -> list[Item | None]:
        """`get` of each of `keys` in one request (a read-only txn, one linearizable
        snapshot): a bucket's record and an object's current one, no bodies."""
        return [item_of(a.kvs[0]) if a.kvs else None
                for a in await self._reads.run([pb.RangeRequest(key=key) for key in keys])]

    async def get_and_range(self, keys: tuple[bytes, ...], start: bytes, end: bytes, limit: int
                            ) -> tuple[list[Item | None], list[Item]]:
        """`get` of each of `keys` and `range(start, end, limit)` in one request: a read-only
        txn, one linearizable snapshot (a bucket's record, an object's current record and its
        inline bodies); concurrent ones share a request (etcd_reads.py)."""
        *gets, last = (a.kvs for a in await self._reads.run(
            [*(pb.RangeRequest(key=key) for key in keys),
             pb.RangeRequest(key=start, range_end=end, limit=limit)]))
        return [item_of(kvs[0]) if kvs else None for kvs in gets], [item_of(kv) for kv in last]

    async def txn(self, txn: Txn) -> bool:
        done, _ = await self.txn_or_read(txn, ())
        return done

    async def txn_or_read(self, txn: Txn, reads: tuple[bytes, ...]
                          ) -> tuple[bool, dict[bytes, Item | None]]:
        """One etcd Txn: the puts and deletes on success, ranges of `reads` on failure;
        concurrent ones share a request (storage/metadata/etcd_batch.py). One that writes a
        tenant or access-key record also puts AUTH_CHANGE (see `auth_stamp`)."""
        if any(map(is_auth_record, (*txn.puts, *txn.deletes))):
            txn = Txn(txn.compares, {**txn.puts, AUTH_CHANGE: b""}, txn.deletes)
        sent, asked, f = fenced(txn, reads)  # a leased worker's step: its lease compared too
        shared = self._sharing if isinstance(self._sharing, SharedCommits) else None
        run = shared.run if shared is not None else self._batcher.run
        return check(f, *await run(sent, asked), reads)

    async def share_commits(self, path: Path, owner: bool) -> None:
        """Several gateway worker processes: the owner (worker 0) batches every worker's
        commits, the others send theirs to it at `path` (storage/metadata/etcd_share.py)."""
        def run(txn: Txn, reads: tuple[bytes, ...], wanted: Wanted | None = None
                ) -> Awaitable[tuple[bool, dict[bytes, Item | None]]]:
            return self._batcher.run(txn, reads, wanted)  # (looked up per call: tests wrap it)

        if owner:
            server = CommitServer(run)
            await server.start(path)
            self._sharing = server
        else:
            self._sharing = SharedCommits(path, run, EtcdError)

    def commit_sharing_state(self) -> dict[str, int]:
        """How this worker's commits left it: through worker 0 or straight to etcd."""
        shared = self._sharing if isinstance(self._sharing, SharedCommits) else None
        return {"forwarded": shared.forwarded if shared else 0,
                "direct": shared.direct if shared else 0}

    async def close(self) -> None:
        if self._sharing is not None:
            await self._sharing.close()
        await self._stamp.close()
        await self._batcher.close()
        await self._reads.close()
        for key, (holder, _) in list(self._leases.items()):
            name = unpack(key)[1]
            try:
                await self.release(name, holder)
            except StorageError as exc:
                log.warning("etcd: could not release lease %r: %s", name, exc)
        if self._lookup is not None:
            self._lookup.cancel()  # waited without swallowing a cancellation of close()
            await asyncio.wait([self._lookup])
            if not self._lookup.cancelled():
                self._lookup.exception()  # retrieved: a failed lookup was logged by its task
        self._kv.close()
        await self._session.close()

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
        grant = await self._call("/lease/grant", {"TTL": str(max(1, int(ttl_s)))},
                                 idempotent=False)
        lease_id = str(grant["ID"])
        value = msgpack.packb({"fv": LEASE_FORMAT_VERSION, "holder": holder, "ttl": ttl_s},
                              use_bin_type=True)
        request = pb.TxnRequest(compare=[compare_rev(key, 0)], success=[pb.RequestOp(
            request_put=pb.PutRequest(key=key, value=value, lease=int(lease_id)))])
        data = await self._rpc("Txn", request, idempotent=False)
        if data.succeeded:
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
        data = await self._call("/lease/keepalive", {"ID": mine[1]}, idempotent=True)
        ttl = int((data.get("result") or {}).get("TTL", 0))
        if ttl <= 0:
            self._leases.pop(key, None)
            return False
        return True

    async def release(self, name: str, holder: str) -> bool:
        """Give the lease up now (the key is deleted with it)."""
        key = lease_key(name)
        mine = self._leases.pop(key, None)
        if mine is None or mine[0] != holder:
            return False
        await self._revoke(mine[1])
        return True

    async def end_lease(self, name: str, revision: int) -> None:
        """End `(L, name)` as it is at `revision`, held by another process: revoke the etcd
        lease the key is attached to, which deletes the key and makes that holder's next
        keep-alive fail. (Deleting only the key left the holder's renewals succeeding: one
        still alive went on running the worker beside the next holder.)"""
        key = lease_key(name)
        data = await self._rpc("Range", pb.RangeRequest(key=key), idempotent=True)
        if not data.kvs or data.kvs[0].mod_revision != revision:
            return  # changed meanwhile: not the lease the caller decided to end
        if data.kvs[0].lease:
            await self._revoke(str(data.kvs[0].lease))
        else:  # (no etcd lease: nothing renews it)
            await self.txn(Txn(compares={key: revision}, deletes=(key,)))

    async def _revoke(self, lease_id: str) -> None:
        try:
            await self._call("/lease/revoke", {"ID": lease_id}, idempotent=True)
        except EtcdError as exc:
            if "requested lease not found" not in str(exc):
                raise

    # --- watch ----------------------------------------------------------------------

    async def watch_prefix(self, prefix: bytes, start_revision: int = 0,
                           on_created: Callable[[], None] | None = None,
                           on_broken: Callable[[], None] | None = None
                           ) -> AsyncIterator[list[WatchEvent]]:
        """Yield batches of changes under `prefix` as they commit, forever.

        Resumes after the last seen revision on another endpoint when a stream breaks, so
        no change is missed (unless etcd compacted past it: then it restarts from now and
        the caller should re-read the prefix, which it is told by an empty batch).
        `on_created` is called each time etcd confirms a stream (from then on, no change
        under `prefix` goes unseen), `on_broken` each time a stream ends (changes may then
        come late, until the next one is confirmed).
        """
        next_rev = start_revision
        failures = 0
        at = self._current  # the watch's own member: a broken stream never moves requests
        while True:
            ep = self._endpoints[at % len(self._endpoints)]
            create: dict[str, Any] = {"key": b64(prefix), "range_end": b64(prefix_end(prefix))}
            if next_rev:
                create["start_revision"] = str(next_rev)
            try:
                async with self._session.post(
                        f"{ep}{self._prefix}/watch", json={"create_request": create},
                        headers=HAS_LEADER,
                        timeout=aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT_S,
                                                      sock_read=None)) as r:
                    async for line in r.content:
                        if not line.strip():
                            continue
                        result = json.loads(line).get("result") or {}
                        failures = 0
                        if result.get("created") and on_created is not None:
                            on_created()
                        if result.get("compact_revision"):
                            next_rev = 0
                            yield []
                            break
                        events = [_event(e) for e in result.get("events") or []]
                        if events:
                            next_rev = events[-1].revision + 1
                            yield events
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                log.info("etcd watch on %s broke: %s", ep, exc)
            if on_broken is not None:
                on_broken()
            failures += 1
            at = (at + 1) % len(self._endpoints)
            if failures >= len(self._endpoints):
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


def _event(e: dict[str, Any]) -> WatchEvent:
    kv = e.get("kv") or {}
    return WatchEvent(unb64(kv.get("key")), unb64(kv.get("value")),
                      int(kv.get("mod_revision", 0)), e.get("type") == "DELETE")
