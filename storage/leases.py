"""Named leases over the metadata store: which process runs a background worker right now.

A lease `(L, name)` names its holder, carries a fencing token (a number that only grows when
the lease changes hands) and expires unless its holder renews it. Two implementations:

- on etcd, a native etcd lease (`EtcdStore.acquire_lease`): the key is attached to it and
  vanishes by itself when its holder stops renewing; the token is the key's create revision;
- on any other `MetadataStore` (SQLite), a record `{holder, token, expires}` taken and renewed
  with compare-and-swap on its revision; expiry is wall-clock time, so processes sharing the
  store must have roughly synchronised clocks (they share one machine for SQLite).

Each lease also names a fence its worker's steps commit under (`Lease.fence_key`,
storage/metadata/fence.py): the store refuses a step's transaction once the lease changed
hands. Either way a holder also counts time itself: `Lease.valid()` turns False once a TTL has
passed since the last renewal it *saw* succeed, so a process cut off from the metadata stops
its worker before anyone else can take the lease over (the TTL elapses on the other side no
sooner than here).
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import Any

import msgpack

from storage import leaseclock
from storage.keyspace import LEASE, lease_fence_key, lease_key, space
from storage.keyspace import unpack as unpack_key
from storage.metadata import MetadataStore, Txn

LEASE_FORMAT_VERSION = 1


@dataclass(frozen=True)
class LeaseInfo:
    """What the lease record says (for status): `expires` is a wall-clock time, 0 on etcd."""

    name: str
    holder: str
    token: int
    expires: float


@dataclass
class Lease:
    """A lease this process holds: renew it before `ttl_s` passes, stop when it is not valid."""

    name: str
    holder: str
    ttl_s: float
    token: int
    renewed_at: float  # leaseclock.now() of the last successful acquire/renew
    revision: int = 0  # SQLite record revision at our last write
    # what a step's commits compare (storage/metadata/fence.py): a key whose revision changes
    # only when the lease is acquired or ends, never by a renewal (b"": nothing to compare)
    fence_key: bytes = b""
    fence_revision: int = 0

    def valid(self, now: float | None = None) -> bool:
        return (leaseclock.now() if now is None else now) - self.renewed_at < self.ttl_s


def local_process(pid: int | None = None) -> dict[str, Any]:
    """Who this process is, precisely enough to tell later whether it is still running:
    host, boot, pid namespace, pid and the pid's start time (a reused pid starts later)."""
    pid = os.getpid() if pid is None else pid
    return {"host": socket.gethostname(), "boot": _boot_id(), "pidns": _pid_ns(),
            "pid": pid, "start": _start_time(pid)}


def dead_local_process(proc: Any) -> bool:
    """True only when `proc` (from `local_process`) names a process of this very host, boot
    and pid namespace that is no longer running (gone, or its pid now belongs to another
    process). Anything else, another host included, may be alive: False."""
    if not isinstance(proc, dict):
        return False
    me = local_process()
    if any(proc.get(k) != me[k] for k in ("host", "boot", "pidns")) or not me["boot"]:
        return False
    pid = proc.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    start = _start_time(pid)
    return start is None or start != proc.get("start")


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def _pid_ns() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (clock ticks after boot), None if there is no such pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2:].split()
    try:
        return int(fields[19]) if fields[0] != b"Z" else None  # a zombie has exited
    except (IndexError, ValueError):
        return None


def _pack(holder: str, token: int, expires: float, ttl_s: float) -> bytes:
    return msgpack.packb({"fv": LEASE_FORMAT_VERSION, "holder": holder, "token": token,
                          "expires": expires, "ttl": ttl_s}, use_bin_type=True)


def _unpack(raw: bytes) -> dict[str, Any]:
    try:
        rec = msgpack.unpackb(raw, raw=False)
    except (ValueError, msgpack.UnpackException):
        return {}
    return rec if isinstance(rec, dict) else {}


class Leases:
    """Acquire, renew, release and list worker leases on one metadata store."""

    def __init__(self, meta: MetadataStore) -> None:
        self.meta = meta
        self._native = all(hasattr(meta, a) for a in ("acquire_lease", "renew", "release"))

    async def acquire(self, name: str, holder: str, ttl_s: float,
                      succeeds: str = "") -> Lease | None:
        """Take the lease for `holder` unless another live holder has it.

        `succeeds`, when set, is a prefix of holder names this holder replaces (the same
        gateway restarted on the same host and address: two live processes cannot both own
        it), so a lease left by such a dead holder is taken at once rather than after expiry.
        """
        start = leaseclock.now()
        if succeeds:
            await self._drop_predecessor(name, holder, succeeds)
        if self._native:
            whole = max(1, int(ttl_s))  # etcd TTLs are whole seconds: never promise more
            if not await self.meta.acquire_lease(name, holder, whole):  # type: ignore[attr-defined]
                return None
            item = await self.meta.get(lease_key(name))
            if item is None or _unpack(item.value).get("holder") != holder:
                return None  # ended (or taken) at once: not ours after all
            # a keep-alive leaves the key's mod revision as it is: it is the token and fence
            return Lease(name, holder, float(whole), item.revision, start,
                         fence_key=lease_key(name), fence_revision=item.revision)
        item = await self.meta.get(lease_key(name))
        rec = _unpack(item.value) if item is not None else {}
        token = int(rec.get("token", 0))
        if rec and rec.get("holder") != holder and float(rec.get("expires", 0)) > time.time():
            return None
        if rec.get("holder") != holder:
            token += 1  # changes hands: fence off the previous holder
        value = _pack(holder, token, time.time() + ttl_s, ttl_s)
        cmp = {lease_key(name): item.revision if item is not None else 0}
        # renewals rewrite the record: the fence is a key only acquiring writes (same txn)
        puts = {lease_key(name): value, lease_fence_key(name): msgpack.packb(token)}
        if not await self.meta.txn(Txn(compares=cmp, puts=puts)):
            return None
        after = await self.meta.get(lease_key(name))
        rev = after.revision if after is not None and after.value == value else 0
        return Lease(name, holder, ttl_s, token, start, rev,
                     fence_key=lease_fence_key(name), fence_revision=rev)

    async def _drop_predecessor(self, name: str, holder: str, succeeds: str) -> None:
        item = await self.meta.get(lease_key(name))
        if item is None:
            return
        prev = str(_unpack(item.value).get("holder", ""))
        if prev != holder and prev.startswith(succeeds):
            await self._expire(name, item.revision, item.value)

    async def _expire(self, name: str, revision: int, raw: bytes) -> None:
        """End a lease now. On etcd the key goes with its etcd lease (its next revision is
        higher anyway); a record keeps its token, expired, so the next holder's token is
        still larger. Either way the holder's renewals fail from then on."""
        if self._native:  # its etcd lease revoked: the holder's renewals fail as well
            await self.meta.end_lease(name, revision)  # type: ignore[attr-defined]
            return
        rec = _unpack(raw)
        token = int(rec.get("token", 0))
        value = _pack(str(rec.get("holder", "")), token, 0.0, float(rec.get("ttl", 0)))
        # the fence rewritten too: the holder's steps' commits are refused from now on
        await self.meta.txn(Txn(compares={lease_key(name): revision}, puts={
            lease_key(name): value, lease_fence_key(name): msgpack.packb(token)}))

    async def renew(self, lease: Lease) -> bool:
        """Extend `lease`; False when it is lost (expired or taken). Errors propagate."""
        start = leaseclock.now()
        if self._native:
            ok = bool(await self.meta.renew(lease.name, lease.holder))  # type: ignore[attr-defined]
        else:
            value = _pack(lease.holder, lease.token, time.time() + lease.ttl_s, lease.ttl_s)
            ok = lease.revision > 0 and await self.meta.txn(
                Txn(compares={lease_key(lease.name): lease.revision}, puts={lease_key(lease.name): value}))
            if ok:
                after = await self.meta.get(lease_key(lease.name))
                ok = after is not None and after.value == value
                lease.revision = after.revision if ok and after is not None else 0
        if ok:
            lease.renewed_at = start
        return ok

    async def release(self, lease: Lease) -> None:
        """Give the lease up now so another process can take it without waiting."""
        if self._native:
            await self.meta.release(lease.name, lease.holder)  # type: ignore[attr-defined]
        elif lease.revision:
            item = await self.meta.get(lease_key(lease.name))
            if item is not None and item.revision == lease.revision:
                await self._expire(lease.name, item.revision, item.value)

    async def holder(self, name: str) -> LeaseInfo | None:
        """The live holder of `name`, or None."""
        item = await self.meta.get(lease_key(name))
        return self._info(item.key, item.value, item.revision) if item is not None else None

    async def list(self) -> list[LeaseInfo]:
        """Every live lease (expired SQLite records are left out)."""
        items = await self.meta.range(*space(LEASE), limit=1000)
        out = [self._info(i.key, i.value, i.revision) for i in items]
        return [x for x in out if x is not None]

    def _info(self, key: bytes, raw: bytes, revision: int) -> LeaseInfo | None:
        rec = _unpack(raw)
        if not rec or "holder" not in rec:
            return None
        name = unpack_key(key)[1]
        if self._native:
            return LeaseInfo(name, str(rec["holder"]), revision, 0.0)
        expires = float(rec.get("expires", 0))
        if expires <= time.time():
            return None
        return LeaseInfo(name, str(rec["holder"]), int(rec.get("token", 0)), expires)
