"""`tessera up`'s side of `nodes.forker`: the storage nodes started by one forking process.

Each node is seen through `ForkedProc`, the part of `asyncio.subprocess.Process` that
`tessera up` uses (pid, returncode, wait, terminate, kill), so watching and stopping the nodes
stays as it was; their exits come from the forker's `exited ID STATUS` lines, since the forker,
not `tessera up`, is their parent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path


class ForkedProc:
    """A node the forker started: signalled by pid, its end reported by the forker."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self.returncode: int | None = None
        self.ready = asyncio.Event()
        self.forked = asyncio.Event()
        self._ended = asyncio.Event()
        self._orphaned = asyncio.Event()  # the forker is gone: no end will be reported

    def ended(self, status: int) -> None:
        self.returncode = status
        self._ended.set()

    def orphaned(self) -> None:
        self._orphaned.set()

    async def wait(self) -> int:
        """Its exit status; once the forker is gone, polls whether the pid still exists."""
        ended = asyncio.ensure_future(self._ended.wait())
        orphaned = asyncio.ensure_future(self._orphaned.wait())
        try:
            await asyncio.wait({ended, orphaned}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
            orphaned.cancel()
        while self.returncode is None:
            if self.pid is not None and _exists(self.pid):
                await asyncio.sleep(0.1)
            else:
                self.returncode = -signal.SIGKILL  # ended unreported: its status is unknown
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.pid is None or self.returncode is not None:
            return
        os.kill(self.pid, sig)  # ProcessLookupError if it ended and its line is on its way

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def start_forker(config: Path, log_dir: Path, ids: list[str]
                       ) -> tuple[asyncio.subprocess.Process, dict[str, ForkedProc]]:
    """Start the forker for `ids` and a task that reads its lines; returns at once."""
    err = open(log_dir / "nodes-forker.log", "ab")  # noqa: SIM115 - the child owns it
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nodes.forker", "--config", str(config), "--log-dir",
        str(log_dir), *ids, stdout=asyncio.subprocess.PIPE, stderr=err,
        stdin=asyncio.subprocess.DEVNULL, start_new_session=True)
    err.close()
    nodes = {i: ForkedProc() for i in ids}
    assert proc.stdout is not None
    asyncio.create_task(_read(proc.stdout, nodes))
    return proc, nodes


async def _read(stream: asyncio.StreamReader, nodes: dict[str, ForkedProc]) -> None:
    """Dispatch the forker's and the nodes' lines until the forker's stdout closes."""
    while line := await stream.readline():
        words = line.decode(errors="replace").split()
        if len(words) < 3 or words[1] not in nodes:
            continue
        node = nodes[words[1]]
        if words[0] == "forked":
            node.pid = int(words[2])
            node.forked.set()
        elif words[0] == "exited":
            node.ended(int(words[2]))
        elif words[0] == "node" and words[2] == "ready":
            node.ready.set()
    for node in nodes.values():  # the forker is gone: nothing more will be reported
        node.orphaned()


async def until_ready(node: ForkedProc, timeout_s: float) -> str:
    """"ready" once `node` said so (and its pid is known), "exited" if it ended first,
    "timeout" (after killing it) if neither happened within `timeout_s`."""
    ended = asyncio.ensure_future(node.wait())
    ready = asyncio.ensure_future(_both(node.ready, node.forked))
    try:
        done, _ = await asyncio.wait({ended, ready}, timeout=timeout_s,
                                     return_when=asyncio.FIRST_COMPLETED)
    finally:
        ready.cancel()
        ended.cancel()
    if ready in done and node.returncode is None:
        return "ready"
    if node.returncode is not None:
        return "exited"
    with contextlib.suppress(ProcessLookupError):
        node.kill()
    return "timeout"


async def _both(a: asyncio.Event, b: asyncio.Event) -> None:
    await a.wait()
    await b.wait()
