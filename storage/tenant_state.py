"""A tenant's state and the rule every creation under it follows.

A tenant is "active", "shredding" (a shred is fenced), "shredded" or "deleting" (`tessera
tenant delete` began: `storage/tenant_delete.py`). Nothing new — a KEK, an access key, a
bucket, a volume, a KMS key — is made for a tenant that is not active, and a new bucket or
volume commits comparing the tenant record it read (`tenant_compare`), so a delete's mark
and a creation cannot both win.
"""

from __future__ import annotations

from storage.errors import KeyUnavailable, NotFound, TenantDeleting, TenantShredding
from storage.keyspace import tenant_key
from storage.metadata import Item, MetadataStore
from storage.records import Tenant

SHREDDED, SHREDDING = "shredded", "shredding"  # tenant states besides "active"
DELETING = "deleting"  # `tessera tenant delete` began (storage.tenant_delete); no KMS key made


def deleting_message(tenant: str) -> str:
    """What a refusal says while `tenant` is "deleting" (a cut-short delete leaves it so)."""
    return (f"tenant {tenant!r} is being deleted (its access keys are refused, and so are "
            f"writes and new keys, buckets or volumes); run `tessera tenant delete {tenant}` "
            "again to finish")


async def tenant_compare(meta: MetadataStore, tenant: str) -> dict[bytes, int]:
    """The compare a new bucket or volume of `tenant` commits with: its record at the
    revision read, which must be "active" (`require_active`; NotFound when absent). A
    `tenant delete` marks the record before it re-checks for buckets and volumes, so one
    made meanwhile either fails its compare or is seen by that check: none outlives it."""
    return compare_of(tenant, await meta.get(tenant_key(tenant)))


def compare_of(tenant: str, item: Item | None) -> dict[bytes, int]:
    """`tenant_compare` on the record `item` read already (None: absent)."""
    if item is None:
        raise NotFound(f"tenant {tenant!r} does not exist")
    require_active(Tenant.decode(item.value))
    return {item.key: item.revision}


def require_active(t: Tenant) -> None:
    """Refuse to give a tenant not "active" a new KEK or access key: TenantShredding while
    a shred is fenced (the operator may wait or cancel it), KeyUnavailable once shredded."""
    if t.state == SHREDDING:
        raise TenantShredding(f"a shred of tenant {t.name!r} is in progress; wait or cancel "
                              f"it with tessera tenant shred {t.name} --cancel")
    if t.state == DELETING:
        raise TenantDeleting(deleting_message(t.name))
    if t.state != "active":
        raise KeyUnavailable(f"tenant {t.name!r} is shredded")
