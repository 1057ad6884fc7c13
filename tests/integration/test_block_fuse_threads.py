"""The FUSE driver keeps each libfuse worker thread's Python thread state between requests.

ctypes otherwise makes a fresh thread state for every callback on a thread Python did not
start and frees it on return (an mmap, page faults and a munmap per request). A thread-local
counter shows it: with the state kept, a thread's second request sees its first one's count.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/dev/fuse") or not shutil.which("fusermount3"),
    reason="needs root, /dev/fuse and fusermount3")

SERVER = r"""
import sys, threading
import gateway.block.fuse as driver
import mfusepy

class Ops(mfusepy.Operations):
    use_ns = True

    def __init__(self):
        self.local = threading.local()
        self.most = 0

    def getattr(self, path, fh=None):
        if path != "/":
            raise mfusepy.FuseOSError(2)
        return {"st_mode": 0o40755, "st_nlink": 2}

    def getxattr(self, path, name, position=0):
        self.local.n = getattr(self.local, "n", 0) + 1  # requests this thread state saw
        self.most = max(self.most, self.local.n)
        return str(self.most).encode()

driver.PinnedFUSE(Ops(), sys.argv[1], foreground=True)
"""


def test_worker_threads_keep_their_python_state(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    root = str(Path(__file__).resolve().parents[2])
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(mnt)], cwd=root,
                            env={**os.environ, "PYTHONPATH": root},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not os.path.ismount(mnt):  # readiness: the kernel lists the mount
            assert proc.poll() is None, proc.stdout.read().decode()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "FUSE server did not mount"
            time.sleep(0.02)
        # libfuse keeps at most 10 workers: 40 requests give some thread several of them.
        most = max(int(os.getxattr(mnt, "user.n")) for _ in range(20))
        assert most > 1, "every request ran on a fresh Python thread state"
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
