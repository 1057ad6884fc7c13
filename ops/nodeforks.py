"""`tessera up`'s side of `nodes.forker`: the storage nodes started by one forking process.

Each node is seen through `ForkedProc`, the part of `asyncio.subprocess.Process` that
`tessera up` uses (pid, returncode, wait, terminate, kill), so watching and stopping the nodes
stays as it was; their exits come from the forker's `exited ID STATUS` lines, since the forker,
not `tessera up`, is their parent (after the forker, from a pidfd). The forker dies with
`tessera up` (PR_SET_PDEATHSIG); the nodes, in their own sessions, do not.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

from storage.pids import pid_alive

_READERS: set[asyncio.Task[None]] = set()


class ForkedProc:
    """A node the forker started: signalled by pid (through a pidfd where there are pidfds,
    so never another process that got the number after it ended), its end reported by the
    forker, or, once the forker is gone, seen through the pidfd."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self.returncode: int | None = None
        self.ready = asyncio.Event()
        self.forked = asyncio.Event()
        self._ended = asyncio.Event()
        self._orphaned = asyncio.Event()  # the forker is gone: no end will be reported
        self._dead = asyncio.Event()  # its pidfd said it exited
        self._pidfd: int | None = None
        self._gone = False  # its pid named another process when the `forked` line came

    def started(self, pid: int, parent: int | None) -> None:
        """Its `forked` line came: pin the process by a pidfd while it is `parent`'s child."""
        self.pid = pid
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            fd, self._gone = None, True  # ended and reaped already: its line is on the way
        except (AttributeError, OSError):
            fd = None  # no pidfds here: signalled by pid, as before
        actual = _parent_of(pid) if fd is not None and parent is not None else None
        if actual is not None and actual not in (parent, 1):  # the pid was reused: never
            os.close(fd)  # signal it (unknown, or init's after the forker died: still ours)
            fd, self._gone = None, True
        self._pidfd = fd
        if fd is not None:
            asyncio.get_running_loop().add_reader(fd, self._exited)
        self.forked.set()

    def _exited(self) -> None:
        assert self._pidfd is not None
        asyncio.get_running_loop().remove_reader(self._pidfd)
        self._dead.set()

    def ended(self, status: int) -> None:
        self.returncode = status
        self._close()
        self._ended.set()

    def _close(self) -> None:
        if self._pidfd is not None:
            if not self._dead.is_set():
                asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None

    def orphaned(self) -> None:
        self._orphaned.set()

    async def wait(self) -> int:
        """Its exit status; once the forker is gone, -9 (unknown) when it ends."""
        await _first(self._ended, self._orphaned)
        if self.returncode is None and self._pidfd is not None:
            await _first(self._ended, self._dead)
        while self.returncode is None:
            if self.pid is not None and self._pidfd is None and not self._gone \
                    and pid_alive(self.pid):
                await asyncio.sleep(0.1)  # no pidfds here: poll
            else:
                self.returncode = -signal.SIGKILL  # ended unreported: its status is unknown
                self._close()
        return self.returncode

    def send_signal(self, sig: int) -> None:
        """ProcessLookupError if it has ended (its line may be on its way)."""
        if self.pid is None or self.returncode is not None:
            return
        if self._gone:
            raise ProcessLookupError(self.pid)
        if self._pidfd is not None:
            signal.pidfd_send_signal(self._pidfd, sig)
        else:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


async def _first(a: asyncio.Event, b: asyncio.Event) -> None:
    """Until `a` or `b` is set."""
    ta, tb = asyncio.ensure_future(a.wait()), asyncio.ensure_future(b.wait())
    try:
        await asyncio.wait({ta, tb}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        ta.cancel()
        tb.cancel()


def _parent_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


async def start_forker(config: Path, log_dir: Path, ids: list[str]
                       ) -> tuple[asyncio.subprocess.Process, dict[str, ForkedProc]]:
    """Start the forker for `ids` and tasks that read its lines and the nodes'; returns at
    once. The nodes get a stdout pipe of their own, so the forker's ends when it does: its
    `Process.wait()` returns then, and the nodes are told it is gone after its last line."""
    loop = asyncio.get_running_loop()
    node_r, node_w = os.pipe()
    try:
        with open(log_dir / "nodes-forker.log", "ab") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "nodes.forker", "--config", str(config), "--log-dir",
                str(log_dir), "--node-stdout-fd", str(node_w), "--parent-pid", str(os.getpid()),
                *ids, stdout=asyncio.subprocess.PIPE, stderr=err,
                stdin=asyncio.subprocess.DEVNULL, start_new_session=True, pass_fds=(node_w,))
    except BaseException:
        os.close(node_r)
        raise
    finally:
        os.close(node_w)
    node_out = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(node_out),
                                 os.fdopen(node_r, "rb", buffering=0))
    nodes = {i: ForkedProc() for i in ids}
    assert proc.stdout is not None
    for stream, forker in ((proc.stdout, proc.pid), (node_out, None)):
        task = asyncio.create_task(_read(stream, nodes, forker))
        _READERS.add(task)  # the loop holds tasks weakly: one waiting on a pipe was collected
        task.add_done_callback(_READERS.discard)
    return proc, nodes


async def _read(stream: asyncio.StreamReader, nodes: dict[str, ForkedProc],
                forker: int | None) -> None:
    """Dispatch lines until `stream` closes: the forker's own (`forker` its pid; at their
    end it is gone) or the nodes'."""
    while line := await stream.readline():
        words = line.decode(errors="replace").split()
        if len(words) < 3 or words[1] not in nodes:
            continue
        node = nodes[words[1]]
        if words[0] == "forked" and forker is not None:
            node.started(int(words[2]), forker)
        elif words[0] == "exited" and forker is not None:
            node.ended(int(words[2]))
        elif words[0] == "node" and words[2] == "ready":
            node.ready.set()
    if forker is not None:  # the forker is gone: nothing more will be reported
        for node in nodes.values():
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
