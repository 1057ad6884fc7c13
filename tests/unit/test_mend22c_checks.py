"""mend22c, review22c L7 and L8: checks tenant22 added that no test could fail.

- L8: an access key belongs to the tenant record's incarnation (`credential`): a key made
  for a deleted namesake is refused even while its own record says active (the delete
  revokes it, so only a key that escaped the revocation, e.g. restored from a metadata
  backup, reaches this check).
- L8: the replay memory of admin claims is bounded (`once.MEMO`), and a claim it forgot
  is still refused, by the store.
- L7: a gateway answered "taken" by the store for another process's claim must not remember
  it: that process gives the claim back when its change fails (5xx), and the client's retry,
  sent to this gateway, must then be served.
"""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest

from gateway.admin import once
from storage.crypto.keys import FileRootKey
from storage.keyspace import tenant_key
from storage.metadata import Txn
from storage.metadata.sqlite import SqliteStore
from storage.tenants import TenantService

SIGNED = 1796644800  # 20261207T120000Z
DATE = "20261207T120000Z"


async def test_a_key_of_another_incarnation_does_not_authenticate(tmp_path: Path) -> None:
    meta = await SqliteStore.open(tmp_path / "m.db")
    tenants = TenantService(meta, FileRootKey(tmp_path / "root.key"))
    await tenants.load()
    try:
        await tenants.create("bob")
        cred = await tenants.create_key("bob")
        assert await tenants.credential(cred.access_key) == cred
        item = await meta.get(tenant_key("bob"))
        assert item is not None
        rec = msgpack.unpackb(item.value, raw=False, strict_map_key=False)
        rec["incarnation"] = "a-later-bob"  # bob deleted and made again; the key survived
        assert await meta.txn(Txn(compares={item.key: item.revision},
                                  puts={item.key: msgpack.packb(rec, use_bin_type=True)}))
        assert await tenants.credential(cred.access_key) is None
        assert await tenants.list_keys("bob") == []
    finally:
        await meta.close()


async def test_the_replay_memory_is_bounded_and_what_it_forgot_stays_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(once, "MEMO", 8)
    meta = await SqliteStore.open(tmp_path / "m.db")
    try:
        for i in range(20):
            assert await once.claim(meta, f"sig{i}", DATE, now=SIGNED)
        assert len(once._SEEN[meta]) <= 8
        assert once.claim_key("sig0", DATE) not in once._SEEN[meta]  # the oldest forgotten
        assert not await once.claim(meta, "sig0", DATE, now=SIGNED)  # the store refuses it
    finally:
        await meta.close()


async def test_a_retry_after_a_release_is_served_by_a_gateway_that_saw_the_claim(
        tmp_path: Path) -> None:
    meta_a = await SqliteStore.open(tmp_path / "m.db")  # two gateways, one store
    meta_b = await SqliteStore.open(tmp_path / "m.db")
    try:
        assert await once.claim(meta_a, "aa", DATE, now=SIGNED)  # A serves the change...
        assert not await once.claim(meta_b, "aa", DATE, now=SIGNED)  # (a duplicate to B)
        await once.release(meta_a, once.claim_key("aa", DATE))  # ...which fails: 5xx
        assert await once.claim(meta_b, "aa", DATE, now=SIGNED)  # the retry, sent to B
    finally:
        await meta_a.close()
        await meta_b.close()
