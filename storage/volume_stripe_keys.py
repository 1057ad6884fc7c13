"""The keyed codec of a block volume's stripe (an extent or a journal segment), for the
workers that find the stripe by its stripe index entry (kind "extent") and not through an
open volume: the deep scrub's check and the check of a rebuild from exactly k sources
(`ShardWorker._guard`). The record (`VX`, `VJ` or `VJK`) holds the stripe's data key
wrapped by the tenant's KEK; the tenant is the volume's, found by its id (`VOL`, or `VD`
for a deleted volume whose pointers are still being retired).
"""

from __future__ import annotations

from storage.crypto import keys
from storage.crypto.aead import SegmentCipher
from storage.keyspace import EXTENT, VOLUME, volume_gone_key
from storage.keyspace import pack as pack_key
from storage.keyspace import unpack as unpack_key
from storage.metadata import Item, MetadataStore
from storage.pipeline import StripeCodec
from storage.records import unpack
from storage.tenants import TenantService
from storage.volume_io import VolumeHandle
from storage.volume_journal import Segment, _identity
from storage.volume_journal import _codec as journal_codec
from storage.volume_records import Volume, decode_pointer, extent_identity, scan_prefix


class VolumeTenants:
    """Volume id -> tenant, remembered (a volume's tenant never changes)."""

    def __init__(self, meta: MetadataStore) -> None:
        self._meta = meta
        self._known: dict[str, str] = {}

    async def tenant_of(self, vid: str) -> str | None:
        """The tenant of volume `vid`; None when no volume record names it (gone)."""
        if vid in self._known:
            return self._known[vid]
        gone = await self._meta.get(volume_gone_key(vid))
        if gone is not None:
            return Volume.decode(gone.value).tenant
        async for it in scan_prefix(self._meta, pack_key(VOLUME)):
            vol = Volume.decode(it.value)
            self._known[vol.id] = vol.tenant
        return self._known.get(vid)


async def volume_stripe_codec(tenants: TenantService, volumes: VolumeTenants,
                              item: Item) -> StripeCodec | None:
    """The codec, with its cipher, of the volume stripe whose record is `item`; None when
    its volume is gone. Raises what `TenantService.kek` raises (KeyUnavailable when
    shredded; any other StorageError when the store or KMS failed)."""
    name, vid = unpack_key(item.key)[:2]
    tenant = await volumes.tenant_of(vid)
    if tenant is None:
        return None
    if name == EXTENT:
        p = decode_pointer(item.value)
        _, kek = await tenants.kek(tenant, p.kek_version)
        dek = keys.unwrap_dek(kek, tenant, extent_identity(tenant, p), p.dek)
        return VolumeHandle._codec(p, SegmentCipher(dek), tenant)
    d = unpack(item.value)
    d.pop("fv", None)
    s = Segment(**d)
    _, kek = await tenants.kek(tenant, s.kek_version)
    dek = keys.unwrap_dek(kek, tenant, _identity(tenant, s), s.dek)
    return journal_codec(s, SegmentCipher(dek), tenant)
