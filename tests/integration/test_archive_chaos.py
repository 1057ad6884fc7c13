"""Chaos for the archive tier on real processes: kill -9 nodes and the process doing the work
in the middle of lifecycle transitions and of restores; after restarts nothing is lost and
each version's data lives in exactly one place.

The middle of a transition or a restore is held, not raced (test hooks,
storage/testing/archive_holds.py): the gateway's lifecycle worker holds in its first
transition with the new copy written and the manifest not yet swapped, its restore worker in
its first restore with the copy written and not yet committed, and `tessera lifecycle
run-once` after its first transition; a fast pass would otherwise finish between two polls
(and a slow one not start). The gateway runs the lifecycle, restore, GC and repair workers, so killing it kills
the transition or restore in flight; it is restarted by hand (`tessera up` does not restart
children). Waits on restores last as long as the restores keep
advancing. GC grace, orphan grace and the repair sweep are shortened through the environment
the cluster's processes inherit.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from storage.keyspace import object_prefix, span, version_prefix
from storage.records import ObjectVersion, PartLayout
from storage.shards.ids import parse_shard_id
from storage.testing.archive_holds import HOLD_ENV, RESTORE_HOLD_ENV, SWAP_HOLD_ENV
from tests.integration.cluster import (
    LocalCluster,
    stop_processes,
    wait_advancing,
    wait_for,
)
from tests.integration.test_archive import (
    ARCHIVE_NODES,
    DAY,
    error,
    restore,
    run_once,
    ssec,
)

ENV = {"TESSERA_GC_GRACE_S": "2", "TESSERA_ORPHAN_GRACE_S": "3",
       "TESSERA_REPAIR_SWEEP_S": "0.5", "TESSERA_REPAIR_DOWN_GRACE_S": "2"}
BUCKET = "chaos"
PART = 5 * 1024 * 1024  # the smallest part but the last of a multipart upload
# Days of a restored copy where its expiry is not the point: one 10-second day ran out at
# load 50-60 before the last of eight restores was done and read back
KEEP_DAYS = 100


class Chaos:
    """A fresh cluster plus the processes a test restarted by hand (stopped at teardown)."""

    def __init__(self, c: LocalCluster) -> None:
        self.c = c
        self.s3 = c.client()
        self.extra: list[subprocess.Popen] = []

    def restart_node(self, node_id: str) -> None:
        self.extra.append(self.c.restart_node(node_id))

    def restart_gateway(self) -> None:
        log_path = self.c.data / "logs" / f"gateway-restart-{len(self.extra)}.log"
        with log_path.open("w") as log:
            p = subprocess.Popen([sys.executable, "-m", "gateway", "--config",
                                  str(self.c.data / "tessera.toml")],
                                 stdout=log, stderr=subprocess.STDOUT)
        self.extra.append(p)
        wait_for(lambda: p.poll() is not None or "gateway ready" in log_path.read_text(),
                 timeout=300, what="the restarted gateway")
        assert p.poll() is None, log_path.read_text()[-2000:]
        (self.c.data / "run" / "gateway.pid").write_text(f"{p.pid}\n")

    def kill(self, *names: str) -> None:
        for name in names:
            self.c.kill(name, signal.SIGKILL)

    def close(self) -> None:
        stop_processes(self.extra)
        self.c.stop()


def start_chaos(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                env: dict[str, str]) -> Iterator[Chaos]:
    for k, v in {**ENV, **env}.items():
        monkeypatch.setenv(k, v)
    ch = Chaos(LocalCluster(tmp_path / "data", up_args=["--day-seconds", str(DAY)]).start())
    try:
        yield ch
    finally:
        ch.close()


@pytest.fixture
def chaos(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Chaos]:
    yield from start_chaos(tmp_path, monkeypatch, {})


@pytest.fixture
def held_at_swap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                 ) -> Iterator[tuple[Chaos, Path]]:
    """A cluster whose gateway holds its first transition before the manifest swap, until
    the returned path exists (the hold's test hook)."""
    release = tmp_path / "release-swap"
    for ch in start_chaos(tmp_path, monkeypatch, {SWAP_HOLD_ENV: str(release)}):
        yield ch, release


@pytest.fixture
def held_at_restore(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                    ) -> Iterator[tuple[Chaos, Path]]:
    """A cluster whose gateway holds its first restore before committing the restored copy,
    until the returned path exists (the hold's test hook)."""
    release = tmp_path / "release-restore"
    for ch in start_chaos(tmp_path, monkeypatch, {RESTORE_HOLD_ENV: str(release)}):
        yield ch, release


# what is on disk and what the manifests say ---------------------------------------------------

def records(c: LocalCluster) -> list[ObjectVersion]:
    """Every manifest record (current `O/` and history `V/`) of the test bucket."""
    conn = sqlite3.connect(f"file:{c.data / 'meta' / 'tessera.db'}?mode=ro", uri=True)
    try:
        rows = []
        for p in (object_prefix(BUCKET), version_prefix(BUCKET)):
            rows += conn.execute("SELECT v FROM kv WHERE k >= ? AND k < ?", span(p)).fetchall()
    finally:
        conn.close()
    return [ObjectVersion.decode(r[0]) for r in rows]


def wanted(versions: list[ObjectVersion]) -> dict[str, tuple[int, set[tuple[str, int]]]]:
    """stripe id -> (k + m, {(node, shard index)}) of every stripe a manifest names: the
    version's parts and, while it is restored, its restored copy's parts."""
    out: dict[str, tuple[int, set[tuple[str, int]]]] = {}
    for v in versions:
        parts = list(v.parts) + [PartLayout(**p) for p in v.restore.get("parts", [])]
        for p in parts:
            if p.stripe_id and p.size:
                out[p.stripe_id.hex()] = (p.k + p.m, {(n, i) for i, n in enumerate(p.nodes)
                                                      if n})
    return out


def on_disk(c: LocalCluster) -> dict[str, set[tuple[str, int]]]:
    out: dict[str, set[tuple[str, int]]] = {}
    for node, files in c.shard_files().items():
        for f in files:
            try:
                stripe, index = parse_shard_id(f.name)
            except ValueError:
                continue
            out.setdefault(stripe.hex(), set()).add((node, index))
    return out


def misplaced(c: LocalCluster) -> str:
    """"" when every stripe a manifest names is whole (k+m shards, each where its manifest
    says) and no other shard is on any node; else what is wrong."""
    want, have = wanted(records(c)), on_disk(c)
    wrong = [f"{s[:8]} left over on {sorted(have[s])}" for s in set(have) - set(want)]
    for s, (width, places) in want.items():
        if len(places) < width or have.get(s) != places:
            wrong.append(f"{s[:8]} want {sorted(places)} have {sorted(have.get(s, ()))}")
    return "; ".join(wrong)


def one_place(c: LocalCluster, what: str) -> None:
    """Wait until `misplaced` is empty, for as long as what it reports keeps changing (GC
    and the orphan sweep advancing)."""
    def progress() -> tuple[bool, str]:
        wrong = misplaced(c)
        return not wrong, wrong

    wait_advancing(progress, what)


def archive_shards(c: LocalCluster) -> int:
    return sum(len(f) for n, f in c.shard_files().items() if n in ARCHIVE_NODES)


def new_on(c: LocalCluster, nodes: set[str], before: dict[str, set[tuple[str, int]]]) -> bool:
    """True once a shard of a stripe that was not on disk before is on one of `nodes`."""
    for node, files in c.shard_files().items():
        if node in nodes:
            for f in files:
                try:
                    stripe, _ = parse_shard_id(f.name)
                except ValueError:
                    continue
                if stripe.hex() not in before:
                    return True
    return False


# the workload ---------------------------------------------------------------------------------

def put_objects(s3: Any, storage_class: str = "STANDARD") -> dict[str, tuple[bytes, bool]]:
    """Eight incompressible objects (key -> (body, SSE-C)) from a fixed seed: obj/0..3 of two
    parts (so a move has a middle: one part's stripe written, the other in flight), obj/4..7
    of one; obj/1 and obj/5 are SSE-C."""
    rnd = random.Random(20261126)
    out = {}
    for i in range(8):
        key, customer = f"obj/{i}", i in (1, 5)
        enc = ssec() if customer else {}
        if i < 4:
            bodies = [rnd.randbytes(PART), rnd.randbytes(2_000_000)]
            up = s3.create_multipart_upload(Bucket=BUCKET, Key=key, StorageClass=storage_class,
                                            **enc)["UploadId"]
            done = [{"PartNumber": n, "ETag": s3.upload_part(
                Bucket=BUCKET, Key=key, UploadId=up, PartNumber=n, Body=b, **enc)["ETag"]}
                for n, b in enumerate(bodies, start=1)]
            s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=up,
                                         MultipartUpload={"Parts": done}, **enc)
            out[key] = (b"".join(bodies), customer)
        else:
            body = rnd.randbytes(1_000_000)
            s3.put_object(Bucket=BUCKET, Key=key, Body=body, StorageClass=storage_class, **enc)
            out[key] = (body, customer)
    return out


def head(s3: Any, key: str, customer: bool) -> dict[str, Any]:
    return s3.head_object(Bucket=BUCKET, Key=key, **(ssec() if customer else {}))


def is_restored(s3: Any, key: str, customer: bool) -> bool:
    return (head(s3, key, customer).get("Restore") or "").startswith('ongoing-request="false"')


def wait_restored(c: LocalCluster, s3: Any, objects: dict[str, tuple[bytes, bool]],
                  what: str) -> None:
    """Wait until every object is restored, for as long as the restores keep advancing (one
    more done, or shards of a copy written): the restore worker copies megabytes per object,
    which a loaded two-core machine slows many times over; a stuck restore still fails."""
    def progress() -> tuple[bool, tuple[int, int]]:
        done = sum(is_restored(s3, k, cust) for k, (_, cust) in objects.items())
        shards = sum(len(files) for files in c.shard_files().values())
        return done == len(objects), (done, shards)

    wait_advancing(progress, what)


def read_back(s3: Any, objects: dict[str, tuple[bytes, bool]]) -> None:
    for key, (body, customer) in objects.items():
        got = s3.get_object(Bucket=BUCKET, Key=key, **(ssec() if customer else {}))
        assert got["Body"].read() == body, key
        assert got["StorageClass"] == "GLACIER"


def responsive(s3: Any) -> bool:
    try:
        s3.head_bucket(Bucket=BUCKET)
        return True
    except Exception:  # noqa: BLE001 - not up yet
        return False


def objects_due_for_glacier(c: LocalCluster, s3: Any,
                            ) -> tuple[dict[str, tuple[bytes, bool]], dict[str, set[tuple[str, int]]]]:
    """The workload, and a lifecycle rule that moves it to GLACIER today; returns the
    objects and what was on disk before the rule."""
    s3.create_bucket(Bucket=BUCKET)
    objects = put_objects(s3)
    before = on_disk(c)
    today = time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime())
    s3.put_bucket_lifecycle_configuration(Bucket=BUCKET, LifecycleConfiguration={"Rules": [
        {"ID": "cold", "Status": "Enabled", "Filter": {"Prefix": "obj/"},
         "Transitions": [{"Date": today, "StorageClass": "GLACIER"}]}]})
    return objects, before


# the tests ------------------------------------------------------------------------------------

def test_kill_nodes_and_gateway_during_transition(held_at_swap: tuple[Chaos, Path]) -> None:
    """The gateway, an archive node and a standard node killed mid-transition: the gateway's
    lifecycle worker is held (its test hook) with the first version's archive copy written
    and its manifest not yet swapped, however loaded the machine is. After the restarts the
    next passes move every version, and the orphaned copy is collected."""
    chaos, release = held_at_swap
    c, s3 = chaos.c, chaos.s3
    objects, before = objects_due_for_glacier(c, s3)
    held = release.with_name(release.name + ".held")
    # the gateway's lifecycle worker starts moving them within a second
    wait_advancing(lambda: (held.exists(), archive_shards(c)),
                   interval=0.05, what="the gateway to write its first archive copy")
    # Held, the copy is written (the hold comes at the swap, after the parts' writes). Its
    # shards are not asserted here: unreferenced for 3 s (the orphan grace), the repair
    # worker, which is not held, may already be collecting them.
    chaos.kill("gateway", "a1", "n4")
    moved = sum(v.storage_class == "GLACIER" for v in records(c))
    assert moved == 0  # no manifest swapped: killed in the middle of the transition
    release.touch()  # the restarted gateway does not hold
    chaos.restart_node("a1")
    chaos.restart_node("n4")
    chaos.restart_gateway()
    wait_for(lambda: responsive(s3), what="S3 after the restart")
    # progress: versions moved, or shards of a copy written (a copy is megabytes of
    # re-encoding, which a loaded box stretches past the stall bound)
    wait_advancing(lambda: ((n := sum(head(s3, k, cust).get("StorageClass") == "GLACIER"
                                      for k, (_, cust) in objects.items())) == len(objects),
                            (n, archive_shards(c))),
                   what="every object in GLACIER")
    assert {v.storage_class for v in records(c)} == {"GLACIER"}
    assert all(p.profile == "archive" for v in records(c) for p in v.parts)
    one_place(c, "transitioned data in one place")
    status, err = error(lambda: s3.get_object(Bucket=BUCKET, Key="obj/0"))
    assert (status, err["Code"]) == (403, "InvalidObjectState")
    for key in objects:
        assert restore(s3, key, KEEP_DAYS, "Expedited", BUCKET) == 202
    wait_restored(c, s3, objects, "restores")
    read_back(s3, objects)
    one_place(c, "archived data and restored copies in one place each")


def test_kill_lifecycle_run_once_during_transition(chaos: Chaos, tmp_path: Path) -> None:
    """`tessera lifecycle run-once` killed mid-pass; the next pass finishes the job. The
    gateway's own lifecycle worker is slowed to one pass an hour (config, then a restart:
    `[archive] lifecycle_interval_s` and a real `[lifecycle]` day, as a pass comes at least
    every quarter of a lifecycle day; the rule's Date makes the moves due either way), so
    that the CLI is the only process moving data. The CLI holds after its first transition
    (its test hook, storage/testing/archive_holds.py) until killed: the kill lands mid-pass however
    loaded the machine is."""
    c, s3 = chaos.c, chaos.s3
    c.stop()
    toml = c.data / "tessera.toml"
    text = toml.read_text()
    assert "lifecycle_interval_s = 1.0" in text and "[lifecycle]" not in text
    toml.write_text(text.replace("lifecycle_interval_s = 1.0", "lifecycle_interval_s = 3600")
                    + "\n[lifecycle]\nday_seconds = 86400.0\n")
    c.start()
    objects, before = objects_due_for_glacier(c, s3)
    release = tmp_path / "release-run-once"  # never made: the kill is what ends the hold
    held = release.with_name(release.name + ".held")
    cli = subprocess.Popen([sys.executable, "-m", "ops.cli", "lifecycle", "run-once"],
                           env={**os.environ, "TESSERA_CONFIG": str(toml),
                                HOLD_ENV: str(release)},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_advancing(lambda: (cli.poll() is not None or held.exists(),
                                sum(len(f) for n, f in c.shard_files().items()
                                    if n in ARCHIVE_NODES)),
                       interval=0.05, what="run-once to move its first version")
        assert cli.poll() is None, "run-once finished without holding after a transition"
        assert new_on(c, ARCHIVE_NODES, before)  # it wrote archive stripes...
    finally:
        cli.kill()
        cli.wait()
    assert cli.returncode == -signal.SIGKILL
    moved = sum(v.storage_class == "GLACIER" for v in records(c))
    assert moved == 1  # ...moved exactly one version, and was killed with seven to go
    assert all(head(s3, k, cust).get("StorageClass") in (None, "GLACIER")
               for k, (_, cust) in objects.items())

    def all_moved() -> tuple[bool, int]:
        run_once(c)
        n = sum(v.storage_class == "GLACIER" for v in records(c))
        return n == len(objects), n

    wait_advancing(all_moved, what="the next passes to move the rest")
    one_place(c, "transitioned data in one place")
    for key in objects:
        assert restore(s3, key, KEEP_DAYS, "Expedited", BUCKET) == 202
    wait_restored(c, s3, objects, "restores")
    read_back(s3, objects)


def test_kill_nodes_and_gateway_during_restore(held_at_restore: tuple[Chaos, Path]) -> None:
    """The gateway, an archive node and a standard node killed mid-restore: the gateway's
    restore worker is held (its test hook) with the first restored copy written and not
    yet committed, however loaded the machine is. After the restarts the queued jobs
    complete, each version gets one copy, and the copies expire and are collected."""
    chaos, release = held_at_restore
    c, s3 = chaos.c, chaos.s3
    s3.create_bucket(Bucket=BUCKET)
    objects = put_objects(s3, "GLACIER")
    before = on_disk(c)
    standard = {n for n in c.shard_files() if n not in ARCHIVE_NODES}
    for key in objects:  # copies kept until all are read back (a loaded box is slow)
        assert restore(s3, key, KEEP_DAYS, "Expedited", BUCKET) == 202
    held = release.with_name(release.name + ".held")
    wait_advancing(lambda: (held.exists(), sum(len(f) for n, f in c.shard_files().items()
                                                if n in standard)),
                   interval=0.05, what="the gateway to write its first restored copy")
    # Held, the copy is written (the hold comes at its commit). Its shards are not asserted:
    # unreferenced for 3 s (the orphan grace), the repair worker may be collecting them.
    chaos.kill("gateway", "a2", "n1")
    done = sum(v.restore.get("state") == "done" for v in records(c))
    assert done == 0  # nothing committed: killed in the middle of the first restore
    release.touch()  # the restarted gateway does not hold
    chaos.restart_node("a2")
    chaos.restart_node("n1")
    chaos.restart_gateway()
    wait_for(lambda: responsive(s3), what="S3 after the restart")
    # the queued jobs survive the restart and complete
    wait_restored(c, s3, objects, "restores after the restart")
    read_back(s3, objects)
    one_place(c, "one restored copy per object")
    copies = set(on_disk(c)) - set(before)
    assert len(copies) == 4 * 2 + 4  # one copy of each part, no duplicate
    # asking again once restored is a 200 and sets the expiry anew: Days=1, so the copies
    # expire within two (10-second) days and their shards are collected (a Days=1 restore
    # from the start let the first copies expire before a loaded box had made the last)
    for key in objects:
        assert restore(s3, key, 1, "Expedited", BUCKET) == 200
    wait_for(lambda: not any("Restore" in head(s3, k, cust) for k, (_, cust) in objects.items()),
             timeout=2 * DAY + 20, what="restored copies to expire")
    def retired() -> tuple[bool, tuple[int, int]]:
        left, disk = sum(bool(v.restore) for v in records(c)), set(on_disk(c))
        return not left and disk == set(before), (left, len(disk))

    wait_advancing(retired, what="expired copies retired and collected")
    one_place(c, "only the archived data is left")
    status, err = error(lambda: s3.get_object(Bucket=BUCKET, Key="obj/2", **ssec()))
    assert (status, err["Code"]) == (403, "InvalidObjectState")
