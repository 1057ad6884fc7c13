"""Full disks while boto3 clients write, on a running cluster with no restart: a node's data
directory, then the metadata directory, each on a small tmpfs filled to ENOSPC. Every
acknowledged write reads back intact, a write that cannot be stored gets an S3 error, no
process dies, and once space is freed writes succeed again without a restart.

Root only (tmpfs mounts, up to 512 MiB of RAM at once, unmounted by the `small_disk`
fixture's finalizer whatever a test does). Runtime: 5 tests, 20-42 s each, 136 s serial on
the loaded 2-core box (load about 10), each starting its own cluster."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from gateway.s3.errors_map import STORAGE_FULL
from tests.held_shards import held
from tests.integration.cluster import LocalCluster

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="full disks are tmpfs mounts: "
                                "root only; CI runs as root")

BODY = 300 * 1024  # a few segments' worth, under the gateway's single-PUT inline limit
BIG = 3 << 20  # three segments: the streamed write path


def body(i: int, size: int = BODY) -> bytes:
    return (i.to_bytes(4, "big") * (size // 4))


SmallDisk = Callable[[Path, int], contextlib.AbstractContextManager[Path]]


@pytest.fixture
def small_disk() -> Iterator[SmallDisk]:
    """`small_disk(path, mib)`: `path`'s contents moved onto a tmpfs of `mib` MiB mounted
    over it (the processes using it must be stopped), unmounted when its block ends and, by
    this fixture's finalizer, whatever the test did (the mounts hold up to 512 MiB of RAM)."""
    mounted: list[Path] = []

    @contextlib.contextmanager
    def mount(path: Path, mib: int) -> Iterator[Path]:
        keep = path.with_name(path.name + ".keep")
        path.rename(keep)
        path.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m,mode=0700", "tmpfs",
                        str(path)], check=True)
        mounted.append(path)
        try:
            shutil.copytree(keep, path, symlinks=True, dirs_exist_ok=True)
            yield path
        finally:
            _unmount(path)
            shutil.rmtree(keep, ignore_errors=True)

    yield mount
    for path in reversed(mounted):
        _unmount(path)


def _unmount(path: Path) -> None:
    while os.path.ismount(path):
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill(path: Path) -> Path:
    """Write a file in `path` until its file system is full; the file."""
    filler = path / "filler"
    with contextlib.suppress(OSError), open(filler, "wb") as fh:
        while True:
            fh.write(bytes(1 << 16))
            fh.flush()
    return filler


def shard_count(node: Path) -> int:
    return len(held(node))  # shard files and packed shards (tests.held_shards)


def alive(c: LocalCluster) -> dict[str, bool]:
    """Every cluster process named in run/, and whether it is still running."""
    out = {}
    for p in sorted((c.data / "run").glob("*.pid")):
        pid = int(p.read_text())
        try:
            os.kill(pid, 0)
            out[p.stem] = True
        except ProcessLookupError:
            out[p.stem] = False
    return out


def writes(s3, keys: range,  # type: ignore[no-untyped-def]
           size: int = BODY) -> tuple[dict[str, bytes], list[tuple[int, str, str]]]:
    """PUT each key, `size` bytes: (acknowledged key -> body, (status, code, message) of
    each refused PUT)."""
    acked, refused = {}, []
    for i in keys:
        try:
            s3.put_object(Bucket="full", Key=f"k{i}", Body=body(i, size))
            acked[f"k{i}"] = body(i, size)
        except ClientError as exc:
            refused.append((exc.response["ResponseMetadata"]["HTTPStatusCode"],
                            exc.response["Error"]["Code"], exc.response["Error"]["Message"]))
    return acked, refused


def freed(s3, filler: Path, keys: range) -> dict[str, bytes]:  # type: ignore[no-untyped-def]
    """Remove `filler`, then PUT `keys`: every one is acknowledged; key -> body."""
    filler.unlink()
    more, refused = writes(s3, keys)
    assert (len(more), refused) == (len(keys), [])
    return more


def read_back(s3, acked: dict[str, bytes]) -> None:  # type: ignore[no-untyped-def]
    """Every acknowledged key reads back as written."""
    for key, want in acked.items():
        assert s3.get_object(Bucket="full", Key=key)["Body"].read() == want, key


def started(c: LocalCluster):  # type: ignore[no-untyped-def]
    """Start `c`, create bucket "full" and PUT k0-k4, all acknowledged: (boto3 client,
    `alive(c)` before the writes, acknowledged key -> body)."""
    c.start()
    s3 = c.client()
    s3.create_bucket(Bucket="full")
    before = alive(c)
    acked, _ = writes(s3, range(0, 5))
    assert len(acked) == 5
    return s3, before, acked


def refused_while_full(c: LocalCluster, s3, disk: Path, keys: range,  # type: ignore[no-untyped-def]
                       before: dict[str, bool], big: range = range(0)
                       ) -> tuple[Path, dict[str, bytes]]:
    """Fill `disk`, then PUT `big` (`BIG` bytes each: streamed) and `keys`: some are
    refused, every refusal a 503 ServiceUnavailable saying the storage is full (it said "Too
    few storage nodes are reachable" when the nodes' disks were), and no process died. (The
    filler file, the acknowledged ones.)"""
    filler = fill(disk)
    more, refused = writes(s3, big, BIG)
    assert len(refused) == len(big), refused  # no room for those on the full disk
    acked, refused_small = writes(s3, keys)
    refused += refused_small
    assert alive(c) == before
    assert refused and set(refused) == {(503, "ServiceUnavailable", STORAGE_FULL)}, refused
    return filler, more | acked


def refused_start(small_disk: SmallDisk, under: str,
                  mib: int) -> tuple[Path, str, str]:
    """A new cluster's data directory `under` on a small disk of `mib` MiB, filled: a
    gateway (2 workers) started on its configuration exits 1 having said one line starting
    "tessera gateway:". (The disk's mount point, that line, the whole stderr.)"""
    # a short base: the workers' run directory is <data>/run only while that path is at
    # most 80 bytes (gateway/__main__.py _run_parent; their Unix sockets), else the system
    # temp directory, which is not the small disk (an xdist worker's tmp_path is too long)
    base = Path(tempfile.mkdtemp(prefix="tdf-", dir="/tmp"))
    try:
        c = LocalCluster(base / "data").start()
        c.stop()
        assert len(str((c.data / "run").resolve())) <= 80
        with small_disk(c.data / under, mib) as disk:
            fill(disk)
            p = subprocess.run([sys.executable, "-m", "gateway", "--config",
                                str(c.data / "tessera.toml"), "--workers", "2"],
                               capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert p.returncode == 1, (p.returncode, p.stderr[-3000:])
    # worker 0 says why; the workers it started (their run directory removed under them)
    # must not blame the address after it, in whatever order the processes print
    said = [ln for ln in p.stderr.strip().splitlines() if ln.startswith("tessera gateway:")]
    assert len(said) == 1, (said, p.stderr[-3000:])
    return disk, said[0], p.stderr


def test_full_disks_lose_no_acknowledged_write_and_recover_without_restart(
        tmp_path: Path, small_disk: SmallDisk) -> None:
    c = LocalCluster(tmp_path / "data").start()
    c.stop()  # the node's and the metadata's directories go onto small file systems
    with small_disk(c.data / "nodes" / "n1", 64) as node_disk, \
            small_disk(c.data / "meta", 64) as meta_disk:
        try:
            s3, before, acked = started(c)
            assert before and all(before.values()), before

            filler = fill(node_disk)  # a node's disk full: the writes go on without it
            shards = shard_count(node_disk)
            more, refused_node = writes(s3, range(5, 25))
            acked |= more
            assert alive(c) == before
            assert shard_count(node_disk) == shards  # it really stored nothing
            # and it lists nothing its disk does not hold (a packed append that failed is
            # neither acknowledged nor indexed)
            assert c.listed("n1") <= {s.sid for s in held(node_disk)}
            assert {r[:2] for r in refused_node} <= {(503, "ServiceUnavailable")}, refused_node
            acked |= freed(s3, filler, range(25, 30))

            # the metadata's disk full: writes refused
            filler, more = refused_while_full(c, s3, meta_disk, range(30, 40), before)
            acked |= more
            acked |= freed(s3, filler, range(40, 45))

            read_back(s3, acked)
            assert alive(c) == before
        finally:
            c.stop()


def test_shards_of_writes_the_full_metadata_disk_refused_are_removed(
        tmp_path: Path, small_disk: SmallDisk) -> None:
    # The shards go to the nodes before the commit: a commit the full metadata disk
    # refuses could queue nothing for collection either, and they stayed on the nodes
    # until the orphan sweep's grace ran out.
    c = LocalCluster(tmp_path / "data").start()
    c.stop()
    nodes = sorted((c.data / "nodes").iterdir())
    with small_disk(c.data / "meta", 64) as meta_disk:
        try:
            s3, before, acked = started(c)
            per_object = sum(map(shard_count, nodes)) / len(acked)
            assert per_object >= 4, per_object  # shards on the nodes (not inline)
            filler, more = refused_while_full(c, s3, meta_disk, range(5, 15), before)
            acked |= more
            assert sum(map(shard_count, nodes)) == per_object * len(acked)
            acked |= freed(s3, filler, range(15, 20))
            read_back(s3, acked)
        finally:
            c.stop()


def test_a_gateway_on_a_full_disk_refuses_to_start_in_one_line(
        small_disk: SmallDisk) -> None:
    # Its workers' shared maps (connections, health, activity) are new files under
    # <data>/run at every start: on a full disk they were sparse, and the first store into
    # one killed the gateway with SIGBUS (status -7, no word of why).
    run, said, _ = refused_start(small_disk, "run", 1)
    assert said.startswith("tessera gateway: cannot start: no space on the file system "
                           f"of {run}/"), said
    assert said.endswith("free space there, then start again"), said


def test_a_gateway_restarted_on_a_full_metadata_disk_says_so_in_one_line(
        small_disk: SmallDisk) -> None:
    # SQLite's first opener truncates <db>-shm and must grow it: on a full disk that is
    # SQLITE_IOERR_SHMSIZE, and the gateway died with a "disk I/O error" traceback.
    meta, said, stderr = refused_start(small_disk, "meta", 8)
    assert said.startswith("tessera gateway: cannot start: the metadata store's disk is "
                           "full (disk I/O error: SQLITE_IOERR_SHMSIZE on "
                           f"{meta}/"), said
    assert said.endswith("free space on its file system, then start again"), said
    assert "Traceback" not in stderr, stderr[-3000:]


def test_every_node_disk_full_refuses_writes_and_recovers_without_restart(
        tmp_path: Path, small_disk: SmallDisk) -> None:
    # The whole machine's disk full (as another lane's benchmark data did): every node's
    # data directory on one file system, filled.
    c = LocalCluster(tmp_path / "data").start()
    c.stop()
    with small_disk(c.data / "nodes", 256) as nodes_disk:
        try:
            s3, before, acked = started(c)
            filler, more = refused_while_full(c, s3, nodes_disk, range(5, 15), before)
            acked |= more
            acked |= freed(s3, filler, range(15, 20))
            read_back(s3, acked)
            assert alive(c) == before
        finally:
            c.stop()


def test_a_cluster_whose_one_disk_fills_keeps_serving_and_recovers(
        tmp_path: Path, small_disk: SmallDisk, monkeypatch: pytest.MonkeyPatch) -> None:
    # Everything on one file system, as on the machine whose disk filled: the nodes'
    # shards, the metadata, the logs, the audit log, the gateway workers' shared maps.
    # Two nodes (of nine) refuse every shard write for another reason all along, as nodes
    # that stall under load do: a refusal whose first targets include both had 4 "no
    # space" answers, one short of the write quorum, and said "Too few storage nodes are
    # reachable" (ci19c, when two nodes stalled). A refusal now asks the nodes how full
    # their disks are (`storage.fullness`), on every write path: two streamed writes come
    # first, refused mid-stream before any spare is tried (review20a).
    monkeypatch.setenv("TESSERA_TEST_NODE_FAULT", "n1:1:fail,n5:1:fail")
    (tmp_path / "data").mkdir()
    with small_disk(tmp_path / "data", 512) as disk:
        c = LocalCluster(disk, up_args=["--workers", "2"])
        try:
            s3, before, acked = started(c)
            filler, more = refused_while_full(c, s3, disk, range(5, 15), before,
                                              big=range(100, 102))
            acked |= more
            read_back(s3, acked)  # reads go on while the disk is full
            acked |= freed(s3, filler, range(15, 20))
            read_back(s3, acked)
            assert alive(c) == before
        finally:
            c.stop()
