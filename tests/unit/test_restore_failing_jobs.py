"""review22c M3: the restore worker read only the first `limit` (8) due jobs, and a failing
job kept its place at the head of the queue, so eight jobs that kept failing stalled every
tenant's restores behind them; and a job that can never succeed (its version sealed with a
KMS key since deleted, as `tenant delete` of a writer under a grant does) was retried for
ever. Now the read reaches past jobs waiting on a retry time and tries them after the others,
and a job whose key is gone ends: its version's restore is `failed`, its entry leaves the
queue, counted once. Lifecycle: a transition of such a version is an error, not "gone"."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from storage import archive
from storage.archive import ArchiveService
from storage.keyspace import RESTORE_QUEUE, archive_job_key, object_key, space
from storage.kms import KmsDisabled
from storage.lifecycle import LifecycleReport
from storage.lifecycle_rules import Action
from storage.metadata import Item
from storage.records import Bucket, ObjectVersion, PartLayout
from storage.records import pack as pack_record
from storage.testing.simnodes import SimNodes
from tests.inproc import sim_config, wired_cluster


async def test_failing_jobs_do_not_hold_back_the_jobs_behind_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = sim_config(tmp_path, 0)
    async with wired_cluster(tmp_path, cfg, SimNodes(list(cfg.nodes))) as c:
        now = time.time_ns()
        for i in range(8):  # at the head of the queue: a disabled key, failing every time
            await c.meta.put(archive_job_key(RESTORE_QUEUE, now - 10**9 + i, "b", f"bad{i}",
                                             "null"), pack_record({}))
        await c.meta.put(archive_job_key(RESTORE_QUEUE, now - 10, "b", "good", "null"),
                         pack_record({}))
        tried: list[bytes] = []

        async def complete(item: Item) -> bool:
            tried.append(item.key)
            if b"good" in item.key:
                await c.meta.delete(item.key)  # its copy made: the job leaves the queue
                return True
            raise KmsDisabled("the key is disabled.")

        svc: ArchiveService = c.archive
        monkeypatch.setattr(svc, "_complete", complete)
        monkeypatch.setattr(archive, "RETRY_S", 0.0)  # every retry time passed by the next
        done = 0
        for _ in range(3):
            done += await svc.complete_due_restores()
        assert done == 1, f"the job behind 8 failing ones was never tried ({len(tried)} tries)"


async def test_a_job_whose_key_is_gone_ends_failed(tmp_path: Path) -> None:
    cfg = sim_config(tmp_path, 0)
    async with wired_cluster(tmp_path, cfg, SimNodes(list(cfg.nodes))) as c:
        await c.tenants.create("u")
        job = archive_job_key(RESTORE_QUEUE, time.time_ns() - 10**9, "vault", "k", "v1")
        # u's write into t's bucket, sealed with u's KMS key, archived; u's key is gone
        v = ObjectVersion(bucket="vault", key="k", version_id="v1", tenant="t", size=0,
                          etag="e", last_modified=time.time(), storage_class="GLACIER",
                          sse={"algorithm": "aws:kms", "kms_key": "no-such-key",
                               "kms_tenant": "u"},
                          restore={"state": "ongoing", "tier": "Standard", "days": 1,
                                   "due": time.time() - 1, "queue_key": job})
        await c.meta.put(object_key("vault", "k"), v.encode())
        await c.meta.put(job, pack_record({"tenant": "t"}))
        assert await c.archive.complete_due_restores() == 0
        assert await c.meta.range(*space(RESTORE_QUEUE), limit=10) == []  # not retried
        item = await c.meta.get(object_key("vault", "k"))
        assert item is not None
        r = ObjectVersion.decode(item.value).restore
        assert r["state"] == "failed" and "does not exist" in r["error"], r
        assert "queue_key" not in r
        assert c.archive.stats.restores_failed == 1
        assert await c.archive.complete_due_restores() == 0
        assert c.archive.stats.restores_failed == 1  # counted once


async def test_a_transition_whose_key_is_gone_is_an_error_logged_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """review22c L4: the transition re-seals with the version's KMS key; KmsNotFound (a
    NotFound) was taken for "the version is gone meanwhile": not counted, never said."""
    cfg = sim_config(tmp_path, 0)
    async with wired_cluster(tmp_path, cfg, SimNodes(list(cfg.nodes))) as c:
        await c.tenants.create("u")
        part = PartLayout(number=1, size=10, etag="e", stripe_id=b"\x01" * 16, k=4, m=2,
                          segment_size=65536, nodes=[], profile="elsewhere")
        v = ObjectVersion(bucket="vault", key="k", version_id="v1", tenant="t", size=10,
                          etag="e", last_modified=time.time(), parts=[part],
                          sse={"algorithm": "aws:kms", "kms_key": "no-such-key",
                               "kms_tenant": "u"})
        b = Bucket(name="vault", tenant="t", created=time.time())
        reports = [LifecycleReport(), LifecycleReport()]
        with caplog.at_level(logging.WARNING, logger="tessera.lifecycle"):
            for rep in reports:  # two passes
                await c.lifecycle._apply(b, v, Action("transition", "GLACIER"), rep, True)
        assert [r.errors for r in reports] == [1, 1]
        said = [r for r in caplog.records if "KMS key is gone" in r.getMessage()]
        assert len(said) == 1, said
