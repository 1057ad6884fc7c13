"""atkcrash18: a process killed between the steps of a volume delete or clone leaves either
the whole operation or none of it, and its garbage is collected.

The kill is modelled at the metadata store: the transaction named applies, and the process
does nothing more (the `Killed` exception unwinds it without any handler running a
further store write, as SIGKILL would). Then the background workers run, as in the
restarted gateway.

- Delete used to remove the record, then retire the extent pointers and journal segments,
  then unlink the clone from its origin, each its own transaction: killed after the first,
  the pointers (and their stripes' shards) stayed forever, named by no volume, and the
  origin still listed the clone, so neither the origin nor its snapshot could be deleted.
- Clone used to create the record, link it into the origin, then set its base, one
  transaction each: killed after the first, a volume of the clone's name existed that read
  zeros instead of the snapshot.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from storage.errors import NotFound
from storage.keyspace import extent_prefix, journal_prefix, kept_journal_prefix, span, volume_key
from storage.metadata import Txn
from storage.volume_records import Volume
from storage.volumes import VolumeService
from storage.workers import WorkerState
from storage.workers.reclaim import TenantReclaimer
from tests.unit.test_volume_journal import SIZE, with_service
from tests.unit.test_volume_snapshot_held import PAGE, read_page, write_page


class Killed(BaseException):
    """The process died here (SIGKILL): nothing after this point runs."""


def kill_after(svc: VolumeService, monkeypatch: pytest.MonkeyPatch,
               when: Callable[[Txn], bool]) -> None:
    """The first transaction `when` picks applies, then the process dies."""
    real = svc.meta.txn

    async def txn(t: Txn) -> bool:
        done = await real(t)
        if done and when(t):
            monkeypatch.setattr(svc.meta, "txn", real)
            raise Killed
        return done

    monkeypatch.setattr(svc.meta, "txn", txn)


async def volume_records(svc: VolumeService, vid: str) -> list[Any]:
    out: list[Any] = []
    for prefix in (extent_prefix(vid), journal_prefix(vid), kept_journal_prefix(vid)):
        out += await svc.meta.range(*span(prefix), limit=1000)
    return out


async def restarted_workers(svc: VolumeService) -> None:
    """The reclaim worker of the restarted gateway, run until it is idle."""
    w = TenantReclaimer(svc.meta, 0.0, svc)
    for _ in range(100):
        if await w.step() == WorkerState.IDLE:
            return
    raise AssertionError("the reclaim worker never went idle")


async def origin_with_clone(svc: VolumeService) -> str:
    """Volume v with snapshot s, clone c of it with extents of its own; c's id."""
    await svc.create("t", "v", SIZE)
    await write_page(svc, "v", b"A")
    await svc.snapshot("t", "v", "s")
    await svc.clone("t", "v", "s", "c")
    await write_page(svc, "c", b"C", SIZE - PAGE, holder="c")
    return (await svc.get("t", "c")).id


def test_a_delete_killed_after_its_first_step_is_finished_by_the_workers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def body(svc: VolumeService) -> None:
        cid = await origin_with_clone(svc)
        assert await volume_records(svc, cid)
        kill_after(svc, monkeypatch, lambda t: volume_key("t", "c") in t.deletes)
        with pytest.raises(Killed):
            await svc.delete("t", "c")
        with pytest.raises(NotFound):  # the delete happened: the name is gone
            await svc.get("t", "c")
        await restarted_workers(svc)
        assert await volume_records(svc, cid) == []  # no pointer of it is left
        assert (await svc.get("t", "v")).clones == []
        await svc.delete_snapshot("t", "v", "s")  # nothing holds the snapshot any more
        await svc.delete("t", "v")
    with_service(body)


def test_a_clone_killed_after_its_first_step_is_whole_or_absent(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def body(svc: VolumeService) -> None:
        await svc.create("t", "v", SIZE)
        await write_page(svc, "v", b"A")
        await svc.snapshot("t", "v", "s")
        kill_after(svc, monkeypatch, lambda t: volume_key("t", "c") in t.puts)
        with pytest.raises(Killed):
            await svc.clone("t", "v", "s", "c")
        await restarted_workers(svc)
        try:
            c = await svc.get("t", "c")
        except NotFound:
            assert (await svc.get("t", "v")).clones == []
            return
        assert (await svc.get("t", "v")).clones == ["t/c"]
        assert c.base is not None
        assert await read_page(svc, "c") == b"A" * PAGE
    with_service(body)


def test_a_flatten_killed_after_its_cut_leaves_the_origin_free(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Flatten cut the clone's link to its origin, then dropped it from the origin's clones,
    one transaction each: killed between, the origin listed for good a clone that no longer
    read through it, so neither the origin's snapshot nor the origin could ever be deleted
    (deleting the clone unlinks only the origins it still reads through)."""
    async def body(svc: VolumeService) -> None:
        await origin_with_clone(svc)

        def cut(t: Txn) -> bool:
            raw = t.puts.get(volume_key("t", "c"))
            return raw is not None and Volume.decode(raw).base is None

        kill_after(svc, monkeypatch, cut)
        with pytest.raises(Killed):
            await svc.flatten("t", "c")
        await restarted_workers(svc)
        c = await svc.get("t", "c")
        assert c.base is None
        assert (await svc.get("t", "v")).clones == []
        await svc.delete_snapshot("t", "v", "s")
        await svc.delete("t", "c")
        await svc.delete("t", "v")
    with_service(body)


def test_a_snapshot_delete_killed_after_its_record_update_still_retires_pointers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """delete_snapshot drops the snapshot from the record, then retires the extent pointers
    only it kept: killed between, those pointers (and their shards) stayed until some later
    snapshot delete or the volume's delete, which may never come."""
    async def body(svc: VolumeService) -> None:
        await svc.create("t", "v", SIZE)
        for data in (b"A", b"B"):  # extent 0 written, snapshotted, then overwritten
            await write_page(svc, "v", data)
            if data == b"A":
                await svc.snapshot("t", "v", "s")
        vid = (await svc.get("t", "v")).id
        assert len(await svc.meta.range(*span(extent_prefix(vid, 0)), limit=10)) == 2

        def dropped(t: Txn) -> bool:
            raw = t.puts.get(volume_key("t", "v"))
            return raw is not None and not Volume.decode(raw).snapshots

        kill_after(svc, monkeypatch, dropped)
        with pytest.raises(Killed):
            await svc.delete_snapshot("t", "v", "s")
        await restarted_workers(svc)
        assert len(await svc.meta.range(*span(extent_prefix(vid, 0)), limit=10)) == 1
        assert await read_page(svc, "v") == b"B" * PAGE
    with_service(body)


def test_two_snapshot_deletes_on_one_volume_keep_each_others_marker(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """review18d (6): both deletes used the one `(VC, volume id)` marker, and the first read
    its revision after its record update: a second delete that marked it in between had its
    mark dropped by the first, and then, killed before it retired its pointers, left them
    (and their shards) with no marker for the reclaim worker to finish."""
    async def body(svc: VolumeService) -> None:
        await svc.create("t", "v", SIZE)
        for data in (b"A", b"B", b"C"):  # extent 0: gen 0 (s1), gen 1 (s2), gen 2 (live)
            await write_page(svc, "v", data)
            if data != b"C":
                await svc.snapshot("t", "v", "s1" if data == b"A" else "s2")
        vid = (await svc.get("t", "v")).id
        assert len(await svc.meta.range(*span(extent_prefix(vid, 0)), limit=10)) == 3
        real = svc.meta.txn
        state = {"second": False}

        def snaps(t: Txn) -> set[str] | None:
            raw = t.puts.get(volume_key("t", "v"))
            if raw is None:
                return None
            return {s["name"] for s in Volume.decode(raw).snapshots.values()}

        async def txn(t: Txn) -> bool:
            done = await real(t)
            if done and snaps(t) == {"s2"} and not state["second"]:
                state["second"] = True  # s1's delete updated the record: s2's runs now
                with pytest.raises(Killed):
                    await svc.delete_snapshot("t", "v", "s2")
            elif done and snaps(t) == set() and state["second"]:
                raise Killed  # s2's delete dies after its record update
            return done

        monkeypatch.setattr(svc.meta, "txn", txn)
        await svc.delete_snapshot("t", "v", "s1")
        monkeypatch.setattr(svc.meta, "txn", real)
        await restarted_workers(svc)
        assert len(await svc.meta.range(*span(extent_prefix(vid, 0)), limit=10)) == 1
        assert await read_page(svc, "v") == b"C" * PAGE
    with_service(body)


def test_a_marker_whose_step_keeps_failing_backs_off_and_blocks_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """review18d (8): the reclaim worker ran the first `VD` marker's step before anything
    else, every step: one whose step kept raising stopped every other volume delete and
    every tenant reclaim for good (and was retried each second). Now it waits out a
    doubling back-off while the rest goes on."""
    from storage.keyspace import tenant_key, volume_gone_key
    from storage.records import Tenant
    from storage.workers import reclaim

    async def body(svc: VolumeService) -> None:
        await svc.create("t", "w", SIZE)
        await write_page(svc, "w", b"W")
        wid = (await svc.get("t", "w")).id
        kill_after(svc, monkeypatch, lambda t: volume_key("t", "w") in t.deletes)
        with pytest.raises(Killed):
            await svc.delete("t", "w")  # a real VD left by a kill, after the bad one
        bad = volume_gone_key("!bad")  # sorts first
        await svc.meta.put(bad, (await svc.meta.get(volume_gone_key(wid))).value)  # type: ignore[union-attr]
        await svc.meta.put(tenant_key("z"), Tenant(name="z", created=0.0,
                                                   state="shredded").encode())
        real = reclaim.gone_volume_step
        calls: list[bytes] = []

        async def step(meta: Any, item: Any, grace_s: float) -> None:
            if item.key == bad:
                calls.append(item.key)
                raise RuntimeError("this marker's step always fails")
            await real(meta, item, grace_s)

        monkeypatch.setattr(reclaim, "gone_volume_step", step)
        now = [0.0]
        w = TenantReclaimer(svc.meta, 0.0, svc, clock=lambda: now[0])
        for _ in range(100):
            if await w.step() == WorkerState.IDLE:
                break
        else:
            raise AssertionError("the reclaim worker never went idle")
        assert await volume_records(svc, wid) == []  # the other delete was finished
        assert await svc.meta.get(volume_gone_key(wid)) is None
        assert w.reclaimed == 1  # and the tenant reclaimed
        assert len(calls) == 1  # the failing one tried once, then backed off
        now[0] = 1.5  # past its first pause (1 s): tried again, the pause doubles (2 s)
        await w.step()
        assert len(calls) == 2
        now[0] = 3.0
        await w.step()
        assert len(calls) == 2
        now[0] = 3.6
        await w.step()
        assert len(calls) == 3
    with_service(body)
