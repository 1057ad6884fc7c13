"""KMS key states (storage.kms): the transitions AWS KMS allows, what a key that is not
Enabled refuses, and the purge of keys whose deletion is due; and which encryption hides
the MD5 in an ETag (storage.datakeys.etag_hides_md5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.crypto.keys import FileRootKey
from storage.datakeys import etag_hides_md5
from storage.errors import InvalidInput
from storage.keyspace import kms_alias_key, kms_key_key
from storage.kms import KmsDisabled, KmsInvalidState, KmsNotFound, KmsService, purge_due
from storage.metadata.sqlite import SqliteStore
from storage.tenants import TenantService


async def _svc(tmp_path: Path) -> tuple[KmsService, SqliteStore]:
    meta = await SqliteStore.open(tmp_path / "meta.db")
    tenants = TenantService(meta, FileRootKey(tmp_path / "root.key"))
    await tenants.load()
    for t in ("acme", "other"):
        await tenants.create(t)
    return KmsService(meta, tenants, "us-east-1"), meta


async def test_states_follow_aws_kms_transitions(tmp_path: Path) -> None:
    svc, meta = await _svc(tmp_path)
    k = await svc.create("acme", ["app"])
    raw = await svc.material("acme", k.key_id)
    assert (await svc.set_enabled("acme", "alias/app", False)).state == "Disabled"
    with pytest.raises(KmsDisabled, match=r"key/.* is disabled\.$"):
        await svc.material("acme", k.key_id)  # the cached material is not handed out
    with pytest.raises(KmsDisabled):
        await svc.resolve("acme", "alias/app")
    assert (await svc.resolve("acme", "alias/app", for_use=False)).state == "Disabled"
    assert (await svc.set_enabled("acme", k.key_id, True)).state == "Enabled"
    assert await svc.material("acme", k.key_id) == raw
    pending = await svc.schedule_deletion("acme", "alias/app", 3600)
    assert pending.state == "PendingDeletion" and pending.deletion_date > 0
    for change in (svc.set_enabled("acme", "alias/app", True),
                   svc.set_enabled("acme", "alias/app", False),
                   svc.schedule_deletion("acme", "alias/app", 60)):
        with pytest.raises(KmsInvalidState, match="pending deletion"):
            await change
    with pytest.raises(KmsInvalidState, match="pending deletion"):
        await svc.material("acme", k.key_id)
    assert (await svc.cancel_deletion("acme", "alias/app")).state == "Disabled"
    with pytest.raises(KmsInvalidState, match="not pending deletion"):
        await svc.cancel_deletion("acme", "alias/app")
    default = await svc.default_key("acme")
    with pytest.raises(InvalidInput, match="managed"):
        await svc.set_enabled("acme", default.key_id, False)
    await meta.close()


async def test_purge_deletes_only_due_keys_and_their_aliases(tmp_path: Path) -> None:
    svc, meta = await _svc(tmp_path)
    due = await svc.create("acme", ["a", "b"])
    later = await svc.create("acme", ["c"])
    theirs = await svc.create("other", ["a"])  # the same alias in another tenant
    await svc.schedule_deletion("acme", "alias/a", 0.0)  # deleted now
    assert await meta.get(kms_key_key("acme", due.key_id)) is None
    for alias in ("a", "b"):
        assert await meta.get(kms_alias_key("acme", alias)) is None
    with pytest.raises(KmsNotFound, match="does not exist"):
        await svc.material("acme", due.key_id)
    await svc.schedule_deletion("acme", "alias/c", 3600)
    assert await purge_due(meta) == 0  # not due yet: kept, and listed as PendingDeletion
    assert [k.state for k in await svc.list("acme")] == ["PendingDeletion"]
    assert await meta.get(kms_alias_key("other", "a")) is not None
    assert (await svc.resolve("other", "alias/a")).key_id == theirs.key_id
    assert later.key_id in [k.key_id for k in await svc.list("acme")]
    await meta.close()


@pytest.mark.parametrize(("sse", "hidden"), [
    ({}, False), ({"algorithm": "AES256"}, False), ({"algorithm": "aws:kms"}, True),
    ({"algorithm": "aws:kms:dsse"}, True), ({"algorithm": "SSE-C"}, True),
])
def test_etag_hides_md5_for_kms_and_customer_keys(sse: dict[str, str], hidden: bool) -> None:
    assert etag_hides_md5(sse) is hidden


def test_opaque_etag_golden_vector() -> None:
    """Pinned: a changed derivation would change the ETags of stored objects."""
    from storage.crypto import keys

    got = keys.opaque_etag(b"k" * 32, "acme", "d41d8cd98f00b204e9800998ecf8427e")
    assert got == "0826cf8103d211b9a22d0224f04c814b"
    assert keys.opaque_etag(b"j" * 32, "acme", "d41d8cd98f00b204e9800998ecf8427e") != got
    assert keys.opaque_etag(b"k" * 32, "acmf", "d41d8cd98f00b204e9800998ecf8427e") != got
