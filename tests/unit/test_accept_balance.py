"""Gateway workers taking turns on one listening socket (`gateway/balance.py`).

Two accept loops in one process stand for two workers: each watches its own descriptor of
the same socket and publishes its open connections in the shared slot file.
"""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

from gateway.balance import BalancedAccept, ConnSlots, shared_sockets


class _Conn(asyncio.Protocol):
    def __init__(self, worker: int, made: asyncio.Queue[tuple[int, _Conn]]) -> None:
        self.worker = worker
        self._made = made
        self.accept: BalancedAccept | None = None
        self.gone = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._made.put_nowait((self.worker, self))

    def connection_lost(self, exc: Exception | None) -> None:
        assert self.accept is not None
        self.accept.lost(self)  # what the gateway's server does for its handlers
        self.gone.set()


def _workers(sock: socket.socket, path: Path, n: int, made: asyncio.Queue[tuple[int, _Conn]],
             slots: int = 0, grace_s: float = 60.0) -> list[BalancedAccept]:
    """Accept loops for workers 0..n-1 of `slots` (default n)."""
    accepts: list[BalancedAccept] = []
    for i in range(n):
        def factory(i: int = i) -> _Conn:
            c = _Conn(i, made)
            c.accept = accepts[i]
            return c

        fd = sock if i == 0 else socket.socket(fileno=os.dup(sock.fileno()))
        accepts.append(BalancedAccept(fd, ConnSlots(path, i, slots or n), factory, grace_s))
    return accepts


async def _connect(port: int, made: asyncio.Queue[tuple[int, _Conn]],
                   ) -> tuple[int, asyncio.StreamWriter, _Conn]:
    """A client connection, the worker that took it and its server end."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    worker, conn = await asyncio.wait_for(made.get(), 30)
    return worker, writer, conn


def test_connections_alternate_and_a_closed_one_gives_the_turn_back(tmp_path: Path) -> None:

    async def run() -> None:
        [sock] = shared_sockets("127.0.0.1", 0)
        port = sock.getsockname()[1]
        made: asyncio.Queue[tuple[int, _Conn]] = asyncio.Queue()
        accepts = _workers(sock, tmp_path / "conns", 2, made)
        try:
            held = [await _connect(port, made) for _ in range(6)]
            assert sorted(w for w, _, _ in held) == [0, 0, 0, 1, 1, 1]
            for _, writer, conn in [h for h in held if h[0] == 0][:2]:
                writer.close()
                await asyncio.wait_for(conn.gone.wait(), 30)
            # worker 0 now holds one to worker 1's three: the next two are its own
            assert [(await _connect(port, made))[0] for _ in range(2)] == [0, 0]
            for _, writer, _ in held:
                writer.close()
        finally:
            for a in accepts:
                a.close()

    asyncio.run(run())


def test_a_connection_no_other_worker_takes_is_taken_after_the_grace(tmp_path: Path) -> None:
    """A stalled worker (alive, holding fewer connections, never accepting) does not
    stop service: the other takes the pending connection once nobody accepted for the
    grace period. A dead worker's slot does not count at all."""

    async def run() -> None:
        [sock] = shared_sockets("127.0.0.1", 0)
        port = sock.getsockname()[1]
        made: asyncio.Queue[tuple[int, _Conn]] = asyncio.Queue()
        stalled = ConnSlots(tmp_path / "conns", 1, 2)  # this pid: alive, 0 open, no loop
        (accept,) = _workers(sock, tmp_path / "conns", 1, made, slots=2, grace_s=0.2)
        try:
            loop = asyncio.get_running_loop()
            first = await _connect(port, made)
            t0 = loop.time()
            second = await _connect(port, made)
            assert loop.time() - t0 >= 0.2  # it was not worker 0's turn
            assert first[0] == second[0] == 0
            stalled._SLOT.pack_into(stalled._map, stalled._SLOT.size, 2 ** 22 + 1, 0, 0)
            accept._grace_s = 60.0  # a wait now would outlast the test's
            third = await _connect(port, made)  # slot 1's pid is gone: its turn is void
            assert third[0] == 0
            for _, writer, _ in (first, second, third):
                writer.close()
        finally:
            accept.close()

    asyncio.run(run())


def test_a_stuck_worker_costs_one_grace_not_one_per_connection(tmp_path: Path) -> None:
    """Once a pending connection waited out the grace for a stalled worker, that worker is
    passed over until it accepts again: the next connections are not held a grace each.
    A worker that stops accepting (its site closed) leaves its slot to nobody."""

    async def run() -> None:
        [sock] = shared_sockets("127.0.0.1", 0)
        port = sock.getsockname()[1]
        made: asyncio.Queue[tuple[int, _Conn]] = asyncio.Queue()
        stalled = ConnSlots(tmp_path / "conns", 1, 2)  # this pid: alive, 0 open, no loop
        (accept,) = _workers(sock, tmp_path / "conns", 1, made, slots=2, grace_s=0.2)
        try:
            held = [await _connect(port, made)]
            assert not accept._slots.my_turn()  # one open against the stalled worker's 0
            held.append(await _connect(port, made))  # taken after the grace
            assert accept._slots.my_turn()  # the stalled worker is passed over now
            accept._grace_s = 60.0  # a wait now would outlast the test's
            held += [await _connect(port, made) for _ in range(3)]
            assert [w for w, _, _ in held] == [0] * 5
            stalled.opened()  # it accepts again: its turn counts again
            assert not accept._slots.my_turn()
            stalled.closed()
            stalled.retire()  # its site closed: the slot is nobody's
            assert accept._slots.my_turn()
            for _, writer, _ in held:
                writer.close()
        finally:
            accept.close()

    asyncio.run(run())


def test_a_grace_that_would_turn_the_turns_off_is_refused(tmp_path: Path) -> None:
    import pytest

    from storage.config import ConfigError, config_from_mapping

    def cfg(grace: object) -> object:
        return config_from_mapping({"data_dir": str(tmp_path), "gateway": {"accept_grace_s": grace},
                                    "profiles": {"standard": {"k": 2, "m": 1}},
                                    "nodes": [{"id": f"n{i}", "zone": f"az{i}",
                                               "address": f"127.0.0.{i}:1"} for i in (1, 2, 3)]},
                                   tmp_path)

    assert cfg(0.5).gateway.accept_grace_s == 0.5  # type: ignore[attr-defined]
    for bad in (0, -1, "soon", True):
        with pytest.raises(ConfigError, match="accept_grace_s must be a number >= 0.01"):
            cfg(bad)


def test_every_address_of_the_host_is_bound() -> None:
    """`[gateway] listen = ":PORT"` with several workers binds IPv4 and IPv6, as one worker
    does (it bound only the first address `getaddrinfo` gave); bound, not yet listening."""
    from ops.localports import free_port

    port = free_port(["0.0.0.0"])  # free on every IPv4 address: a cluster's node may hold
    # the port on another loopback address (127.0.2.1), and the wildcard bind would collide
    socks = shared_sockets("", port)
    try:
        infos = socket.getaddrinfo(None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)  # here: 0.0.0.0 and ::
        assert sorted(s.family for s in socks) == sorted({i[0] for i in infos})
        assert all(s.getsockname()[1] == port for s in socks)
        assert not any(s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) for s in socks)
    finally:
        for s in socks:
            s.close()
