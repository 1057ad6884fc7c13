"""The two FUSE clients of S3 against a real cluster, as their users run them: s3fs-fuse (a
bucket as a directory tree: write, rename, append, mtime, a listing past 1,000 keys) and
s3backer (a bucket as one block device file: blocks named with --blockHashPrefix, found
again with --listBlocks after a remount, erased with --erase). Needs root and /dev/fuse
(CI installs the s3fs and s3backer Debian packages)."""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.integration.cluster import LocalCluster

FUSE = os.geteuid() == 0 and os.path.exists("/dev/fuse")
UNMOUNT = shutil.which("fusermount3") or shutil.which("fusermount") or "fusermount"


@contextmanager
def _mounted(argv: list[str], mnt: Path) -> Iterator[Path]:
    """Run a FUSE client in the foreground until `mnt` is a mount; unmount it and wait for
    the client to exit (s3backer writes its dirty blocks back then) when the block ends.
    Yields the file its output goes to (a file, not a pipe: a pipe nobody reads while the
    client runs fills, and the client blocks inside a FUSE operation)."""
    mnt.mkdir(exist_ok=True)
    log = mnt.parent / f"{mnt.name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not os.path.ismount(mnt):  # readiness: the kernel lists the mount
            assert proc.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, f"{argv[0]} did not mount"
            time.sleep(0.02)
        yield log
    finally:
        unmounted = subprocess.run([UNMOUNT, "-u", str(mnt)], capture_output=True)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if unmounted.returncode or proc.returncode < 0:  # busy, or its client killed: a dead
            # mount (ismount cannot tell: stat fails on it) is detached lazily
            if subprocess.run([UNMOUNT, "-uz", str(mnt)], capture_output=True).returncode:
                subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
    assert proc.returncode == 0, log.read_text(errors="replace")


def _key_file(cluster: LocalCluster, path: Path) -> Path:
    """`path` holding "ACCESS_KEY:SECRET_KEY" (owner-only, as s3fs and s3backer demand)."""
    path.write_text(f"{cluster.env['AWS_ACCESS_KEY_ID']}:{cluster.env['AWS_SECRET_ACCESS_KEY']}")
    path.chmod(0o600)
    return path


@pytest.mark.skipif(not FUSE or shutil.which("s3fs") is None,
                    reason="s3fs-fuse needs root, /dev/fuse and the s3fs package")
def test_s3fs_fuse(cluster: LocalCluster, tmp_path: Path) -> None:
    s3 = cluster.client()
    bucket = "s3fs-fuse"
    s3.create_bucket(Bucket=bucket)
    with ThreadPoolExecutor(8) as pool:  # past one listing page (1,000 keys)
        list(pool.map(lambda i: s3.put_object(Bucket=bucket, Key=f"many/f+{i:04d} \u00fc",
                                              Body=b"x"), range(1100)))
    creds = _key_file(cluster, tmp_path / "passwd")
    mnt = tmp_path / "mnt"
    argv = ["s3fs", bucket, str(mnt), "-f", "-o", f"passwd_file={creds}", "-o",
            f"url={cluster.endpoint}", "-o", "use_path_request_style", "-o", "multipart_size=5"]
    big = random.Random(7).randbytes(12 * 1024 * 1024)  # multipart, 5 MiB parts
    with _mounted(argv, mnt):
        (mnt / "d \u00fc+").mkdir()
        (mnt / "d \u00fc+" / "a b+c.txt").write_bytes(b"hello")
        (mnt / "big").write_bytes(big)
        with open(mnt / "big", "ab") as f:
            f.write(b"appended")
        os.rename(mnt / "d \u00fc+" / "a b+c.txt", mnt / "d \u00fc+" / "renamed%.txt")
        os.utime(mnt / "d \u00fc+" / "renamed%.txt", (1_600_000_000, 1_600_000_000))
        (mnt / "empty").write_bytes(b"")
        assert len(os.listdir(mnt / "many")) == 1100
    assert s3.get_object(Bucket=bucket, Key="big")["Body"].read() == big + b"appended"
    assert s3.get_object(Bucket=bucket, Key="d \u00fc+/renamed%.txt")["Body"].read() == b"hello"
    assert s3.head_object(Bucket=bucket, Key="empty")["ContentLength"] == 0
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="d ")["Contents"]}
    assert "d \u00fc+/a b+c.txt" not in keys
    with _mounted(argv, mnt):  # a second mount sees what the first left
        st = os.stat(mnt / "d \u00fc+" / "renamed%.txt")
        assert (st.st_size, int(st.st_mtime)) == (5, 1_600_000_000)
        assert (mnt / "big").read_bytes() == big + b"appended"


@pytest.mark.skipif(not FUSE or shutil.which("s3backer") is None,
                    reason="s3backer needs root, /dev/fuse and the s3backer package")
def test_s3backer(cluster: LocalCluster, tmp_path: Path) -> None:
    s3 = cluster.client()
    bucket = "s3backer"
    s3.create_bucket(Bucket=bucket)
    access = _key_file(cluster, tmp_path / "access")
    opts = [f"--accessFile={access}", f"--baseURL={cluster.endpoint}/", "--blockSize=64k",
            "--size=16M", "--prefix=vol/", "--blockHashPrefix"]
    mnt = tmp_path / "mnt"
    rnd = random.Random(3)
    writes = {off: rnd.randbytes(n) for off, n in
              ((0, 4096), (65536 * 5 + 100, 70000), (16 * 1024 * 1024 - 3000, 3000))}
    with _mounted(["s3backer", "-f", "--listBlocks", *opts, bucket, str(mnt)], mnt):
        fd = os.open(mnt / "file", os.O_RDWR)
        try:
            for off, data in writes.items():
                os.pwrite(fd, data, off)
            os.fsync(fd)
        finally:
            os.close(fd)
    names = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="vol/")["Contents"]]
    blocks = sorted(n for n in names if n != "vol/s3backer-mounted")
    # 4 blocks written (the middle write spans two); each name is hash-block number
    assert len(blocks) == 4 and all(re.fullmatch(r"vol/[0-9a-f]{8}-[0-9a-f]{8}", n)
                                    for n in blocks), names
    with _mounted(["s3backer", "-f", "--listBlocks", *opts, bucket, str(mnt)], mnt) as log:
        with open(mnt / "file", "rb") as f:
            for off, data in writes.items():
                f.seek(off)
                assert f.read(len(data)) == data, off
            f.seek(65536 * 2)
            assert f.read(65536) == bytes(65536)  # never written: zeros, no object
    assert "found 4 non-zero blocks" in log.read_text(errors="replace")
    out = subprocess.run(["s3backer", "--erase", "--force", *opts, bucket], input=b"y\n",
                         capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode()
    left = s3.list_objects_v2(Bucket=bucket, Prefix="vol/").get("Contents", [])
    assert [o["Key"] for o in left if o["Key"] != "vol/s3backer-mounted"] == []
