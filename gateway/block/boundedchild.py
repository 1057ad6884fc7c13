"""A child process given a bounded time to answer (resize and snapshot on a mounted volume).

A request to a FUSE mount whose daemon is paused waits in the kernel past even SIGKILL, and
a thread held so would keep its process (a gateway) from ever exiting. So such a request
runs in a child; past its bound the child is killed and left to a reaper thread (it ends
once its daemon answers or goes), so no zombie waits for the next subprocess this process
starts (review21j F2). One helper for `mount.grow_mounted` and `snaphere.prepare_snapshot`
(review22g F9).
"""

from __future__ import annotations

import os
import selectors
import subprocess
import threading
import time

READY = b"R"  # what a child started with ready=True writes once its imports are done
START_S = 60.0  # a child not ready by then (a host swapping hard) did not answer either


def run_bounded(cmd: list[str], timeout_s: float, *,
                ready: bool = False) -> tuple[int, str, str] | None:
    """Run `cmd` for at most `timeout_s`: (exit code, stdout, stderr), None when it did not
    end in time (killed, reaped by a thread). With `ready`, the bound starts when the child
    writes READY (its interpreter's start and imports, ~1.5 s on a loaded host, are not
    the daemon's answer; review22g F4): at most START_S for that."""
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        if ready and not _await_ready(p):
            raise subprocess.TimeoutExpired(cmd, START_S)
        out, err = p.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        p.kill()
        for f in (p.stdout, p.stderr):
            if f is not None:
                f.close()
        threading.Thread(target=p.wait, name="bounded-child-reaper", daemon=True).start()
        return None
    return p.returncode, out, err


def _await_ready(p: subprocess.Popen[str]) -> bool:
    """Whether the child wrote READY (or ended: its exit says why) within START_S. One byte
    read off the raw pipe, so what follows is left for `communicate`."""
    assert p.stdout is not None
    end = time.monotonic() + START_S
    with selectors.DefaultSelector() as sel:
        sel.register(p.stdout, selectors.EVENT_READ)
        while (left := end - time.monotonic()) > 0:
            if sel.select(left):
                os.read(p.stdout.fileno(), 1)  # READY, or b"" at its end
                return True
    return False
