"""ListObjectVersions paged while versions are put and deleted between the pages: every
version that existed before the first page and was not deleted meanwhile is listed exactly
once, none twice (storage/listing.py `_past_version`).

The history is ordered by commit time; a version's id says when it was made, earlier (its
write was in flight). A page ending at version V whose write was in flight while W
committed lists V before W; once V is deleted, resuming at V's id time skipped W. The
machine makes such versions on purpose: a PUT's id is made at the time another PUT began
(`storage.objects.new_version_id` patched for that one call). The real gateway over
in-memory nodes (SQLite metadata), driven by boto3 from a thread."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test

import storage.objects as objects_mod
from storage.config import Config, LifecycleSettings
from storage.keyspace import span, version_left_prefix
from storage.testing.simnodes import SimNodes
from storage.version_ids import new_version_id
from storage.workers.lifecycle import LifecycleWorker
from tests.inproc import served_s3, sim_config, sim_s3, wired_cluster

KEYS = st.sampled_from(["a", "b", "b/c"])


class Paging(RuleBasedStateMachine):
    s3: Any = None

    @initialize()
    def bucket(self) -> None:
        self.name = "p" + uuid.uuid4().hex[:16]
        self.s3.create_bucket(Bucket=self.name)
        self.s3.put_bucket_versioning(Bucket=self.name,
                                      VersioningConfiguration={"Status": "Enabled"})
        self.live: set[tuple[str, str, str]] = set()  # (key, version id, ETag)
        self.made = 0  # bodies written: each PUT's is its own, so its ETag tells it apart
        self.began: list[int] = []  # when each PUT began (ns): times some later commit follows

    def _body(self) -> bytes:
        self.made += 1
        return f"body {self.made}".encode()

    def _put(self, key: str, made_earlier: int | None) -> None:
        self.began.append(time.time_ns())
        real = objects_mod.new_version_id
        if made_earlier is not None and self.began[:-1]:
            made = self.began[made_earlier % (len(self.began) - 1)]
            objects_mod.new_version_id = lambda now_ns=None: new_version_id(made)  # type: ignore[assignment]
        try:
            put = self.s3.put_object(Bucket=self.name, Key=key, Body=self._body())
        finally:
            objects_mod.new_version_id = real  # type: ignore[assignment]
        self.live.add((key, put["VersionId"], put["ETag"]))

    def _put_null(self, key: str) -> set[tuple[str, str, str]]:
        """A PUT while versioning is suspended: the key's version "null" is replaced by a
        new one (the newest). Returns the versions it replaced."""
        self.s3.put_bucket_versioning(Bucket=self.name,
                                      VersioningConfiguration={"Status": "Suspended"})
        put = self.s3.put_object(Bucket=self.name, Key=key, Body=self._body())
        self.s3.put_bucket_versioning(Bucket=self.name,
                                      VersioningConfiguration={"Status": "Enabled"})
        old = {v for v in self.live if v[0] == key and v[1] == "null"}
        self.live -= old
        self.live.add((key, "null", put["ETag"]))
        return old

    def _delete(self, pick: int) -> tuple[str, str, str] | None:
        if not self.live:
            return None
        # By key and ETag (each PUT's body is its own, made in draw order), not version id:
        # ids sort by the clock and random bytes, so a replay would delete another version.
        gone = sorted(self.live, key=lambda v: (v[0], v[2]))[pick % len(self.live)]
        self.s3.delete_object(Bucket=self.name, Key=gone[0], VersionId=gone[1])
        self.live.discard(gone)
        return gone

    @rule(key=KEYS, made_earlier=st.none() | st.integers(0, 50))
    def put(self, key: str, made_earlier: int | None) -> None:
        self._put(key, made_earlier)

    @rule(pick=st.integers(0, 50))
    def delete(self, pick: int) -> None:
        self._delete(pick)

    @rule(key=KEYS)
    def put_null(self, key: str) -> None:
        self._put_null(key)

    @rule(size=st.integers(1, 3), between=st.lists(
        st.tuples(st.sampled_from(["put", "delete", "null"]), KEYS,
                  st.none() | st.integers(0, 50), st.integers(0, 50)),
        max_size=4))
    def page_through(self, size: int, between: list[tuple[str, str, int | None, int]]
                     ) -> None:
        """Page with `size` per page; after each page one of `between` (a put, a delete,
        often of the version the page ended at, or a null PUT replacing the key's "null"
        version) runs, as another client's would."""
        before = set(self.live)
        deleted: set[tuple[str, str, str]] = set()
        renulled: set[str] = set()  # keys whose "null" a null PUT replaced between pages
        seen: list[tuple[str, str, str]] = []
        kwargs: dict[str, str] = {}
        todo = list(between)
        while True:
            page = self.s3.list_object_versions(Bucket=self.name, MaxKeys=size, **kwargs)
            rows = [(v["Key"], v["VersionId"], v["ETag"]) for v in page.get("Versions", [])]
            seen += rows
            if not page["IsTruncated"]:
                break
            kwargs = {"KeyMarker": page["NextKeyMarker"],
                      "VersionIdMarker": page["NextVersionIdMarker"]}
            if todo:
                what, key, made_earlier, pick = todo.pop(0)
                if what == "put":
                    self._put(key, made_earlier)
                elif what == "null":
                    key = rows[-1][0] if rows and pick % 2 else key
                    renulled.add(key)
                    deleted |= self._put_null(key)
                elif rows and pick % 2:  # the version the page ended at
                    self.s3.delete_object(Bucket=self.name, Key=rows[-1][0],
                                          VersionId=rows[-1][1])
                    self.live.discard(rows[-1])
                    deleted.add(rows[-1])
                elif (gone := self._delete(pick)) is not None:
                    deleted.add(gone)
        # Listed twice only where a page ended at a key's "null" and a null PUT replaced it
        # before the next: the marker "null" then names the new one, the key's newest, and
        # its versions between the two are listed again (`test_a_null_replaced_between_...`)
        twice = {r for r in seen if seen.count(r) > 1}
        assert all(r[0] in renulled for r in twice), f"listed twice: {seen}"
        missing = before - deleted - set(seen)
        assert not missing, f"skipped {missing}; listed {seen}"


async def test_a_null_replaced_between_pages_lists_the_newer_versions_again(
        tmp_path: Path) -> None:
    """A page ends at a key's "null" version; a null PUT (versioning suspended) replaces it
    before the next page. The marker "null" now names the new null, the key's newest
    version, so the next page resumes after it: the key's versions made between the two
    nulls are listed again, none is skipped. Resuming at the old null's place instead (a
    record of it, as a delete leaves) would skip those versions for a listing that began
    after the replacement and ended its page at the new null: the marker cannot tell the
    two apart, so no such record is kept."""
    cfg = sim_config(tmp_path, 4096)
    async with sim_s3(tmp_path, cfg, SimNodes(list(cfg.nodes)), "b") as s3:
        def run() -> None:
            def versioning(status: str) -> None:
                s3.put_bucket_versioning(Bucket="b",
                                         VersioningConfiguration={"Status": status})
            versioning("Suspended")
            s3.put_object(Bucket="b", Key="k", Body=b"old null")
            versioning("Enabled")
            x = [s3.put_object(Bucket="b", Key="k", Body=b)["VersionId"] for b in (b"1", b"2")]
            z = s3.put_object(Bucket="b", Key="z", Body=b"z")["VersionId"]
            page = s3.list_object_versions(Bucket="b", MaxKeys=3)
            assert [v["VersionId"] for v in page["Versions"]] == [x[1], x[0], "null"]
            versioning("Suspended")
            s3.put_object(Bucket="b", Key="k", Body=b"new null")
            versioning("Enabled")
            rest = s3.list_object_versions(Bucket="b", KeyMarker=page["NextKeyMarker"],
                                           VersionIdMarker=page["NextVersionIdMarker"])
            assert [(v["Key"], v["VersionId"]) for v in rest["Versions"]] == [
                ("k", x[1]), ("k", x[0]), ("z", z)]
            # a listing begun now that ends its first page at the new null skips nothing
            first = s3.list_object_versions(Bucket="b", MaxKeys=1)
            assert [v["VersionId"] for v in first["Versions"]] == ["null"]
            rest = s3.list_object_versions(Bucket="b", KeyMarker=first["NextKeyMarker"],
                                           VersionIdMarker=first["NextVersionIdMarker"])
            assert [v["VersionId"] for v in rest["Versions"]] == [x[1], x[0], z]

        await asyncio.to_thread(run)


async def test_versions_are_listed_once_across_pages(tmp_path: Path) -> None:
    cfg = sim_config(tmp_path, 4096)
    async with sim_s3(tmp_path, cfg, SimNodes(list(cfg.nodes)), "unused") as s3:
        Paging.s3 = s3
        await asyncio.to_thread(
            run_state_machine_as_test, Paging, settings=settings(
                max_examples=30, stateful_step_count=20, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow]))


async def test_a_version_committed_while_the_marker_was_in_flight_is_listed(
        tmp_path: Path) -> None:
    """The case itself, without search: V's id is made, W commits, V commits; a page of one
    ends at V, V is deleted, and the next page still lists W (and the version before)."""
    cfg = sim_config(tmp_path, 4096)
    async with sim_s3(tmp_path, cfg, SimNodes(list(cfg.nodes)), "b") as s3:
        def run() -> None:
            s3.put_bucket_versioning(Bucket="b", VersioningConfiguration={"Status": "Enabled"})
            first = s3.put_object(Bucket="b", Key="k", Body=b"first")["VersionId"]
            made = time.time_ns()  # V's id is made here; its write is in flight ...
            w = s3.put_object(Bucket="b", Key="k", Body=b"W")["VersionId"]  # ... W commits
            real = objects_mod.new_version_id
            objects_mod.new_version_id = lambda now_ns=None: new_version_id(made)  # type: ignore[assignment]
            try:
                v = s3.put_object(Bucket="b", Key="k", Body=b"V")["VersionId"]
            finally:
                objects_mod.new_version_id = real  # type: ignore[assignment]
            page = s3.list_object_versions(Bucket="b", MaxKeys=1)
            assert [x["VersionId"] for x in page["Versions"]] == [v]
            s3.delete_object(Bucket="b", Key="k", VersionId=v)
            rest = s3.list_object_versions(Bucket="b", KeyMarker=page["NextKeyMarker"],
                                           VersionIdMarker=page["NextVersionIdMarker"])
            assert [x["VersionId"] for x in rest["Versions"]] == [w, first]

        await asyncio.to_thread(run)


def _retaining(cfg: Config, retention_s: float) -> Config:
    return dataclasses.replace(cfg, lifecycle=LifecycleSettings(
        version_place_retention_s=retention_s))


@pytest.mark.parametrize("retention_s", [86400.0, 0.0])
async def test_a_lifecycle_pass_keeps_fresh_places_and_a_gone_one_still_ends(
        tmp_path: Path, retention_s: float) -> None:
    """The in-flight case with a lifecycle pass between the delete and the next page. Within
    the retention the place is kept and the page lists W; past it (retention 0) the place is
    dropped and the listing falls back to V's id time: it still ends, without an error,
    listing the version committed before V's id (W, committed after it, is the documented
    loss), each page of one once, and the marker never again."""
    cfg = _retaining(sim_config(tmp_path, 4096), retention_s)
    async with wired_cluster(tmp_path, cfg, SimNodes(list(cfg.nodes))) as cluster:
        cred = await cluster.tenants.create_key("t")
        await cluster.buckets.create("t", "b")
        async with served_s3(cluster, cfg, cred.access_key, cred.secret_key) as s3:
            def first_page() -> tuple[str, str, str, dict[str, Any]]:
                s3.put_bucket_versioning(Bucket="b",
                                         VersioningConfiguration={"Status": "Enabled"})
                first = s3.put_object(Bucket="b", Key="k", Body=b"first")["VersionId"]
                made = time.time_ns()
                w = s3.put_object(Bucket="b", Key="k", Body=b"W")["VersionId"]
                real = objects_mod.new_version_id
                objects_mod.new_version_id = lambda now_ns=None: new_version_id(made)  # type: ignore[assignment]
                try:
                    v = s3.put_object(Bucket="b", Key="k", Body=b"V")["VersionId"]
                finally:
                    objects_mod.new_version_id = real  # type: ignore[assignment]
                page = s3.list_object_versions(Bucket="b", MaxKeys=1)
                assert [x["VersionId"] for x in page["Versions"]] == [v]
                s3.delete_object(Bucket="b", Key="k", VersionId=v)
                return first, w, v, page

            first, w, v, page = await asyncio.to_thread(first_page)
            await LifecycleWorker(cluster.lifecycle, 3600.0).step()
            left = await cluster.meta.range(*span(version_left_prefix("b")))
            assert len(left) == (1 if retention_s else 0)

            def rest(max_keys: int) -> list[str]:
                key, vid, seen = page["NextKeyMarker"], page["NextVersionIdMarker"], []
                for _ in range(10):  # a loop would exceed this
                    more = s3.list_object_versions(Bucket="b", KeyMarker=key,
                                                   VersionIdMarker=vid, MaxKeys=max_keys)
                    seen += [x["VersionId"] for x in more.get("Versions", [])]
                    if not more["IsTruncated"]:
                        return seen
                    key, vid = more["NextKeyMarker"], more["NextVersionIdMarker"]
                raise AssertionError(f"listing did not end: {seen}")

            want = [w, first] if retention_s else [first]
            assert await asyncio.to_thread(rest, 1000) == want
            assert await asyncio.to_thread(rest, 1) == want


async def test_the_lifecycle_worker_drops_places_past_their_retention(
        tmp_path: Path) -> None:
    """A bucket without lifecycle rules: a worker pass keeps the places of versions deleted
    within the retention and drops those deleted longer ago (the bucket's metadata stays
    bounded however many versions its deletes remove)."""
    cfg = sim_config(tmp_path, 4096)
    async with wired_cluster(tmp_path, cfg, SimNodes(list(cfg.nodes))) as cluster:
        cred = await cluster.tenants.create_key("t")
        await cluster.buckets.create("t", "b")
        async with served_s3(cluster, cfg, cred.access_key, cred.secret_key) as s3:
            def churn() -> None:
                s3.put_bucket_versioning(Bucket="b",
                                         VersioningConfiguration={"Status": "Enabled"})
                for i in range(3):
                    vid = s3.put_object(Bucket="b", Key=f"k{i}", Body=b"x")["VersionId"]
                    s3.delete_object(Bucket="b", Key=f"k{i}", VersionId=vid)

            await asyncio.to_thread(churn)
            left = span(version_left_prefix("b"))
            worker = LifecycleWorker(cluster.lifecycle, 3600.0)
            await worker.step()
            assert len(await cluster.meta.range(*left)) == 3  # within the retention: kept
            assert worker.last is not None and worker.last.places_dropped == 0
            cluster.lifecycle.place_retention_s = 0.0  # now all of them are past it
            worker = LifecycleWorker(cluster.lifecycle, 3600.0)
            await worker.step()
            assert await cluster.meta.range(*left) == []
            assert worker.last is not None and worker.last.places_dropped == 3


async def test_the_places_of_deleted_versions_go_with_the_bucket(tmp_path: Path) -> None:
    """Each version deleted leaves its place (`version_left_key`); DeleteBucket removes them
    with the bucket (a bucket of the same name made later starts with none)."""
    cfg = sim_config(tmp_path, 4096)
    async with wired_cluster(tmp_path, cfg, SimNodes(list(cfg.nodes))) as cluster:
        cred = await cluster.tenants.create_key("t")
        async with served_s3(cluster, cfg, cred.access_key, cred.secret_key) as s3:
            def fill_and_empty() -> None:
                s3.create_bucket(Bucket="gone")
                s3.put_bucket_versioning(Bucket="gone",
                                         VersioningConfiguration={"Status": "Enabled"})
                for i in range(3):
                    vid = s3.put_object(Bucket="gone", Key=f"k{i}", Body=b"x")["VersionId"]
                    s3.delete_object(Bucket="gone", Key=f"k{i}", VersionId=vid)

            await asyncio.to_thread(fill_and_empty)
            left = span(version_left_prefix("gone"))
            assert len(await cluster.meta.range(*left)) == 3
            await asyncio.to_thread(s3.delete_bucket, Bucket="gone")
            assert await cluster.meta.range(*left) == []
