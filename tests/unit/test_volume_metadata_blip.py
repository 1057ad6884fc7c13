"""A mounted volume of a live tenant keeps reading what its block driver holds while the
metadata store is briefly unavailable (an etcd leader election, a slow store on a loaded
host): a shred cannot happen while nobody can write the tenant record, and the attach
lease bounds a partitioned daemon. EIO there makes ext4 abort its journal (read-only).

review15f: fails on 0d285e8 (b637968/e7763d1 ask the tenant record on every cached read,
so a failed read of it is a read error); passes on 337b111."""

from __future__ import annotations

from gateway.block.cache import ExtentCache
from storage.errors import StorageError
from storage.keyspace import tenant_key
from storage.volume_overlay import JournaledVolume
from storage.volumes import VolumeService
from tests.unit.test_volume_journal import MiB, with_service


class Blip(StorageError):
    """What the etcd store raises while no member has a leader."""


def test_cached_reads_survive_a_tenant_record_read_failure() -> None:
    async def body(svc: VolumeService) -> None:
        await svc.create("t", "v", 3 * MiB)
        h = await svc.open("t", "v", holder="test", lease_ttl_s=30.0)
        try:
            data = bytes(range(256)) * (2 * MiB // 256)
            await h.write(0, data)
            views = {"handle": h, "extent cache": ExtentCache(h),
                     "journaled": JournaledVolume(h)}
            for v in views.values():
                assert await v.read(0, len(data)) == data  # cached / ciphers kept
            meta, real_get = svc.meta, svc.meta.get
            down = tenant_key("t")

            async def get(key: bytes):  # type: ignore[no-untyped-def]
                if key == down:
                    raise Blip("etcd: no leader")
                return await real_get(key)
            meta.get = get  # type: ignore[method-assign]
            svc.tenants._reads._meta = meta  # the shared reads hold the store too
            # SHORT_TTL_S has passed since the last look at the tenant record:
            svc.tenants._state_cache.clear()
            svc.tenants._kek_checked.clear()
            out = {}
            for what, v in views.items():
                try:
                    out[what] = "served" if await v.read(4096, 8192) == data[4096:12288] \
                        else "other bytes"
                except StorageError as exc:
                    out[what] = f"EIO ({exc})"
            # ... but only within the lease ttl of the last look (a daemon cut off from the
            # store longer than that may have missed a shred): EIO then
            h._active_until = 0.0
            svc.tenants._state_cache.clear()
            late = {}
            for what, v in views.items():
                try:
                    await v.read(4096, 8192)
                    late[what] = "served"
                except StorageError:
                    late[what] = "EIO"
            meta.get = real_get  # type: ignore[method-assign]
            assert out == {"handle": "served", "extent cache": "served",
                           "journaled": "served"}, out
            assert late == {"handle": "EIO", "extent cache": "EIO", "journaled": "EIO"}, late
        finally:
            await h.close()
    with_service(body)
