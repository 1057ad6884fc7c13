"""A process tree that must not outlive whoever started it: `TESSERA_EXIT_WITH_PID`.

The test suite names its own pid(s) there (pytest, and each xdist worker). `tessera up` and
the FUSE block daemon run in their own sessions, so a SIGKILLed pytest could never stop
them; they watch each named pid through a pidfd on their event loop instead and, when one
exits, shut down cleanly (children stopped, mounts unmounted). A pidfd, unlike
PR_SET_PDEATHSIG, does not depend on which thread forked the process nor on the direct parent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable

from storage.config_env import ENV_EXIT_WITH_PID as ENV


def starters(environ: dict[str, str] | None = None) -> list[int]:
    """The pids named in `TESSERA_EXIT_WITH_PID` (comma-separated; empty if unset)."""
    value = (os.environ if environ is None else environ).get(ENV, "")
    return [int(p) for p in value.split(",") if p.strip()]


def with_starter(pid: int, environ: dict[str, str] | None = None) -> str:
    """The `TESSERA_EXIT_WITH_PID` value naming `pid` besides the pids already named."""
    return ",".join(str(p) for p in dict.fromkeys([*starters(environ), pid]))


def watch_starters(loop: asyncio.AbstractEventLoop, on_exit: Callable[[], None]) -> list[int]:
    """Call `on_exit` (once, on `loop`) when any pid in `TESSERA_EXIT_WITH_PID` exits; at once
    if one is already gone. Returns the pidfds it watches (closed when one fires). Does
    nothing where there are no pidfds (not Linux >= 5.3)."""
    pids = starters()
    if not pids or not hasattr(os, "pidfd_open"):
        return []
    fds: list[int] = []
    fired = False

    def fire() -> None:
        nonlocal fired
        for fd in fds:
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(fd)
            with contextlib.suppress(OSError):
                os.close(fd)
        fds.clear()
        if not fired:
            fired = True
            on_exit()

    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:  # gone already: its exit would never be seen
            loop.call_soon(fire)
            continue
        except OSError:  # no pidfds in this kernel
            continue
        fds.append(fd)
        loop.add_reader(fd, fire)  # a pidfd reads as ready when its process exits
    return list(fds)
