"""review18d: a killed clone delete, finished by the reclaim worker after a clone of the same
name was made from ANOTHER snapshot of the same origin, must not drop that new clone from
the origin's clones (else the snapshot it reads through can be deleted under it)."""

from __future__ import annotations

import pytest

from storage.errors import Conflict
from storage.keyspace import volume_key
from storage.volumes import VolumeService
from tests.unit.test_volume_crash_steps import Killed, kill_after, restarted_workers
from tests.unit.test_volume_journal import SIZE, with_service
from tests.unit.test_volume_snapshot_held import PAGE, read_page, write_page


def test_finished_delete_keeps_a_same_named_clone_of_another_snapshot(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def body(svc: VolumeService) -> None:
        await svc.create("t", "v", SIZE)
        await write_page(svc, "v", b"A")
        await svc.snapshot("t", "v", "s1")
        await write_page(svc, "v", b"B")
        await svc.snapshot("t", "v", "s2")
        await write_page(svc, "v", b"C")
        await svc.clone("t", "v", "s1", "c")
        kill_after(svc, monkeypatch, lambda t: volume_key("t", "c") in t.deletes)
        with pytest.raises(Killed):
            await svc.delete("t", "c")  # killed after the record moved to VD
        await svc.clone("t", "v", "s2", "c")  # the name again, from the other snapshot
        await restarted_workers(svc)  # finishes the old c's delete
        assert (await svc.get("t", "v")).clones == ["t/c"]
        with pytest.raises(Conflict):  # c reads through s2: it must not be deletable
            await svc.delete_snapshot("t", "v", "s2")
        assert await read_page(svc, "c") == b"B" * PAGE
    with_service(body)
