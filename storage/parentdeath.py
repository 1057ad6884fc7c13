"""A child process that must not outlive its parent: PR_SET_PDEATHSIG (Linux), checked once.

Used by gateway workers (worker 0 is their parent), `nodes.forker` (`tessera up` is its
parent) and etcd members started from a main thread (a test run's): if the parent is
SIGKILLed it has no chance to stop them, so the kernel does.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import sys
import threading

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int, parent: int | None) -> None:
    """Get `sig` when the parent exits, however it exits; exit now (status 0) if `parent`
    (the pid it had at start) is already gone. Does nothing where prctl is missing."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if parent is not None and os.getppid() != parent:
        sys.exit(0)  # the parent is already gone: the signal would never come


def dies_with_us_prefix(sig: signal.Signals) -> list[str]:
    """An argv prefix (util-linux `setpriv --pdeathsig`) giving a program we start (etcd) `sig`
    when we exit, however we exit; [] off Linux, off the main thread (the kernel sends it when
    the forking *thread* exits) or without setpriv. A prefix, not a `preexec_fn`: that forces
    a plain fork() running the parent's at-fork handlers, and grpc's abort the child ~7% of the
    time while a store connection holds its idle stream (review19b)."""
    if not sys.platform.startswith("linux") or \
            threading.current_thread() is not threading.main_thread():
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return []
    return [setpriv, "--pdeathsig", sig.name.removeprefix("SIG"), "--"]
