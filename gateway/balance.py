"""Gateway workers share one listening socket and take turns by connection count.

With one SO_REUSEPORT socket per worker the kernel hashes each connection to a worker: a
client's few long-lived connections (boto3 keeps four) land 3/1 or 4/0 on two workers, so
one worker does most of the work while the other idles. Instead worker 0 binds one socket
that every worker inherits, and a worker accepts only while it holds no more open S3
connections than any other live worker (the counts sit in a small shared file, one slot
per worker). A worker over its share stops watching the socket and looks again a few
milliseconds later; if a connection stays pending while nobody accepts anything for
`grace_s` (`[gateway] accept_grace_s`: a stalled worker), it takes the connection anyway, so a stuck worker
never stops service.

Worker 0 starts the other workers (`spawn_workers`) before it imports the gateway itself
(`gateway.app`), so their imports run beside its own: this module stays light on imports.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from storage.pids import pid_alive
from storage.sharedmap import map_shared

log = logging.getLogger(__name__)

RECHECK_S = 0.003  # how soon a worker over its share looks at the socket again
ACCEPT_ERROR_PAUSE_S = 1.0  # out of descriptors (EMFILE...): as asyncio's own accept loop


class ConnSlots:
    """One slot per worker in a shared file: its pid, open connections, connections
    accepted so far (so a waiting worker can tell that someone is accepting)."""

    _SLOT = struct.Struct("<qqq")

    def __init__(self, path: str | os.PathLike[str], slot: int, slots: int) -> None:
        self.slot = slot
        self.slots = slots
        size = self._SLOT.size * slots
        fd, self._map = map_shared(path, size)
        os.close(fd)
        self.open = 0
        self.accepted = 0
        self._passed: dict[int, int] = {}  # slot -> its accepted count when passed over
        self._publish()

    def _publish(self) -> None:
        self._SLOT.pack_into(self._map, self.slot * self._SLOT.size, os.getpid(), self.open,
                             self.accepted)

    def opened(self) -> None:
        self.open += 1
        self.accepted += 1
        self._publish()

    def closed(self) -> None:
        self.open -= 1
        self._publish()

    def retire(self) -> None:
        """This worker accepts no more: its slot counts as no worker's."""
        self.open = 0
        self._SLOT.pack_into(self._map, self.slot * self._SLOT.size, 0, 0, self.accepted)

    def _others(self) -> list[tuple[int, int, int, int]]:
        return [(i, *self._SLOT.unpack_from(self._map, i * self._SLOT.size))
                for i in range(self.slots) if i != self.slot]

    def _ahead(self) -> list[tuple[int, int]]:
        """(slot, accepted) of the live workers holding fewer connections than this one,
        leaving out those passed over that have not accepted since."""
        return [(i, a) for i, pid, n, a in self._others()
                if n < self.open and self._passed.get(i) != a and pid_alive(pid)]

    def my_turn(self) -> bool:
        """No live worker (not passed over) holds fewer open connections than this one."""
        return not self._ahead()

    def pass_over(self) -> None:
        """The workers ahead of this one let a connection wait out the grace (blocked,
        draining, paused): pass them over until they accept again, so a stuck worker costs
        one grace period, not one per connection."""
        for i, a in self._ahead():
            self._passed[i] = a

    def accepts_seen(self) -> int:
        """Connections accepted by every worker so far."""
        return self.accepted + sum(a for _, _, _, a in self._others())


def shared_sockets(host: str, port: int) -> list[socket.socket]:
    """The sockets worker 0 binds for every worker (inheritable): one per address `host`
    resolves to, as the single-worker listener (asyncio's `create_server`) binds them (`""`
    is every IPv4 and IPv6 address; an IPv6 socket is IPv6 only, so both bind). Bound, not
    listening: the first worker whose cluster is open starts them listening
    (`BalancedAccept`), so a connection made while none is open is refused, as with one
    worker, instead of waiting in the backlog for a start-up that may never finish."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)
    socks: list[socket.socket] = []
    try:
        for family, kind, proto, _, addr in dict.fromkeys(infos):  # unique, in order
            try:
                sock = socket.socket(family, kind, proto)
            except OSError:
                continue  # a family this host lacks (no IPv6): asyncio skips it too
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(addr)
            sock.set_inheritable(True)
    except OSError:
        for sock in socks:
            sock.close()
        raise
    if not socks:
        raise OSError(f"no address to listen on for {host!r}")
    return socks


class BalancedAccept:
    """Accept from `sock` while it is this worker's turn; each connection gets a protocol
    from `factory` (an aiohttp request handler), counted open until it is lost. `sock` is
    made to listen first (it may be the first worker ready: `shared_sockets`)."""

    def __init__(self, sock: socket.socket, slots: ConnSlots,
                 factory: Callable[[], asyncio.Protocol], grace_s: float = 0.25,
                 backlog: int = 1024) -> None:
        sock.listen(backlog)  # a second listen() of the shared socket only resets the backlog
        self._sock = sock
        self._grace_s = grace_s
        self._slots = slots
        self._factory = factory
        self._loop = asyncio.get_running_loop()
        self._watching = False
        self._timer: asyncio.TimerHandle | None = None
        self._waiting_since: float | None = None  # when a pending connection was first left
        self._seen = 0
        self._closed = False
        self._tasks: set[asyncio.Task[object]] = set()
        self._open: set[object] = set()  # protocols of the connections counted open
        sock.setblocking(False)
        self._watch()

    def _watch(self) -> None:
        self._timer = None
        if not self._watching and not self._closed:
            self._loop.add_reader(self._sock.fileno(), self._readable)
            self._watching = True

    def _unwatch(self, delay: float) -> None:
        if self._watching:
            self._loop.remove_reader(self._sock.fileno())
            self._watching = False
        if self._timer is None and not self._closed:
            self._timer = self._loop.call_later(delay, self._watch)

    def _readable(self) -> None:
        woken = True  # a connection is pending now (after an accept, maybe not)
        while True:
            if self._slots.my_turn():
                self._waiting_since = None
            elif woken and self._waited_out():
                self._slots.pass_over()
            else:
                self._unwatch(RECHECK_S)
                return
            woken = False
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.error("gateway cannot accept: %s; pausing %.0f s", exc,
                              ACCEPT_ERROR_PAUSE_S)
                    self._unwatch(ACCEPT_ERROR_PAUSE_S)
                    return
                continue  # the peer went away before we took it (ECONNABORTED...)
            self._waiting_since = None
            conn.setblocking(False)
            self._slots.opened()
            task = self._loop.create_task(self._serve(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _waited_out(self) -> bool:
        """A connection has been left pending while no worker accepted any for `grace_s`."""
        now, seen = time.monotonic(), self._slots.accepts_seen()
        if self._waiting_since is None or seen != self._seen:
            self._waiting_since, self._seen = now, seen
            return False
        return now - self._waiting_since >= self._grace_s

    async def _serve(self, conn: socket.socket) -> None:
        made: list[asyncio.Protocol] = []

        def make() -> asyncio.Protocol:
            proto = self._factory()
            made.append(proto)
            self._open.add(proto)
            return proto

        try:
            await self._loop.connect_accepted_socket(make, sock=conn)
        except Exception as exc:  # the peer left, or no memory: this connection only
            log.warning("gateway could not take a connection: %s", exc)
            conn.close()
            if made:
                self.lost(made[0])
            else:
                self._closed_one()

    def lost(self, proto: object) -> None:
        """A connection this worker accepted is gone (its handler's `connection_lost`)."""
        if proto in self._open:
            self._open.discard(proto)
            self._closed_one()

    def _closed_one(self) -> None:
        self._slots.closed()
        if not self._watching and self._timer is not None and not self._closed:
            self._timer.cancel()
            self._watch()  # this worker may be under its share again

    def close(self) -> None:
        """Stop accepting (the connections already open stay: aiohttp shuts them)."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._watching:
            self._loop.remove_reader(self._sock.fileno())
            self._watching = False
        self._slots.retire()
        self._sock.close()

    async def wait_closed(self) -> None:
        return None


def split_hostport(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class WorkerRole:
    """This process's place among the gateway's worker processes (`--workers N`).

    All of them serve S3 on the listening sockets worker 0 binds (one per address of
    `[gateway] listen`) and passes down (`listen_fds`), taking turns by open connections
    (`gateway.balance`); worker 0 alone runs the admin API, the background workers and the
    cluster gauges and the node health probe, and its /metrics sums every worker's (each
    serves its own on a Unix socket in `rundir`, a private directory that also holds the
    shared client activity and the shared node health, `storage/sharedhealth.py`).
    """

    index: int = 0
    count: int = 1
    rundir: Path | None = None
    listen_fds: tuple[int, ...] = ()

    def socket(self, i: int) -> Path:
        assert self.rundir is not None
        return self.rundir / f"w{i}.sock"


async def spawn_workers(role: WorkerRole, argv: Callable[[int], list[str]],
                        ) -> list[asyncio.subprocess.Process]:
    """Start workers 1..count-1 (`argv(i)` is worker i's command line; they exit with this
    process: see `gateway.__main__`); `gateway.app.serve` waits for their ready lines."""
    return [await asyncio.create_subprocess_exec(*argv(i), stdout=asyncio.subprocess.PIPE,
                                                 pass_fds=role.listen_fds)
            for i in range(1, role.count)]
