"""The node's lean front end (`nodes.leanput`) against a real node process: whole-shard PUTs
are served by it, everything else on the same connection is handed to aiohttp with the
bytes already received, and what it refuses it refuses exactly as the streamed handler."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from storage.shards.auth import TRAILER_BYTES, seal, sign
from storage.shards.format import FRAME_HEAD_BYTES, ShardHeader, pack_frame
from tests.contract.node_harness import Node, make_shard, node, shard_path

__all__ = ["node"]  # the module's node process (fixture)


def log_lines(node: Node, path: str) -> list[dict[str, object]]:
    out = []
    for line in node.log.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("msg") == "request" and rec.get("path") == path:
            out.append(rec)
    return out


async def wait_lines(node: Node, path: str, n: int) -> list[dict[str, object]]:
    """The node's first `n` log lines for `path` (each written when its request is done)."""
    for _ in range(750):
        lines = log_lines(node, path)
        if len(lines) >= n:
            return lines
        await asyncio.sleep(0.02)
    raise AssertionError(f"fewer than {n} log lines for {path}")


def put_request(node: Node, sid: str, body: bytes, *, extra: dict[str, str] | None = None,
                chunked: bool = False, tamper: bool = False) -> bytes:
    """A signed, sealed shard PUT as bytes on the wire (whole, or in two chunks); with
    `tamper`, its trailer is not the body's MAC."""
    path = f"/v1/shards/{sid}"
    headers = sign(node.secret, "PUT", path, "n1", headers=extra, trailer=True)
    sealed = seal(node.secret, headers, body)
    if tamper:
        sealed = sealed[:-1] + bytes([sealed[-1] ^ 1])
    head = f"PUT {path} HTTP/1.1\r\nHost: {node.host}:{node.port}\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items())
    if not chunked:
        return (head + f"Content-Length: {len(sealed)}\r\n\r\n").encode() + sealed
    half = len(sealed) // 2
    parts = [sealed[:half], sealed[half:]]
    return (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + b"".join(
        f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in parts) + b"0\r\n\r\n"


def get_request(node: Node, sid: str) -> bytes:
    path = f"/v1/shards/{sid}"
    headers = sign(node.secret, "GET", path, "n1")
    return (f"GET {path} HTTP/1.1\r\nHost: {node.host}:{node.port}\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()


class Conn:
    """One kept-alive connection to the node, answers read one at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self) -> tuple[int, bytes]:
        status, _, body = await self.answer_with_headers()
        return status, body

    async def answer_with_headers(self) -> tuple[int, dict[str, str], bytes]:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 30)
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in lines[1:] if line)}
        body = await asyncio.wait_for(
            self.reader.readexactly(int(headers["content-length"])), 30)
        return int(lines[0].split(" ")[1]), headers, body


@pytest.fixture
async def conn(node: Node) -> AsyncIterator[Conn]:
    reader, writer = await asyncio.open_connection(node.host, node.port)
    yield Conn(reader, writer)
    writer.close()
    await writer.wait_closed()


async def test_whole_shard_puts_are_served_by_the_lean_front(node: Node, conn: Conn) -> None:
    shards = [make_shard(index=i, frames=1, block_size=262144, last=None) for i in (0, 1)]
    for sid, _, _, body in shards:
        await conn.send(put_request(node, sid, body))
        status, answer = await conn.answer()
        assert status == 201 and json.loads(answer) == {"id": sid, "bytes": len(body),
                                                        "segments": 1}
        assert shard_path(node, sid).read_bytes() == body
        (rec,) = await wait_lines(node, f"/v1/shards/{sid}", 1)
        assert rec["front"] == "lean" and rec["op"] == "put" and rec["status"] == 201
        assert rec["bytes"] == len(body) + TRAILER_BYTES


async def test_other_requests_on_the_connection_go_to_aiohttp(node: Node, conn: Conn) -> None:
    sid, _, _, body = make_shard(index=3, frames=2, block_size=4096, last=None)
    await conn.send(put_request(node, sid, body))
    assert (await conn.answer())[0] == 201
    # a GET and a chunked PUT pipelined behind it: handed off with the bytes received
    sid2, _, _, body2 = make_shard(index=4, frames=3, block_size=4096, last=None)
    await conn.send(get_request(node, sid) + put_request(node, sid2, body2, chunked=True))
    assert await conn.answer() == (200, body)
    assert (await conn.answer())[0] == 201
    assert shard_path(node, sid2).read_bytes() == body2
    sid3, _, _, body3 = make_shard(index=5, frames=1, block_size=4096, last=None)
    await conn.send(put_request(node, sid3, body3))  # the connection stays with aiohttp
    assert (await conn.answer())[0] == 201
    (rec2,) = await wait_lines(node, f"/v1/shards/{sid2}", 1)
    (rec3,) = await wait_lines(node, f"/v1/shards/{sid3}", 1)
    assert "front" not in rec2 and "front" not in rec3 and rec3["status"] == 201


def _refused_cases(stored: tuple[str, ShardHeader], sid: str, h: ShardHeader,
                   blocks: list[bytes], body: bytes) -> list[tuple[str, bytes, dict[str, str]]]:
    """(shard id, body, extra signed headers) of PUTs a node must refuse."""
    corrupt = bytearray(body)
    corrupt[h.frame_offset(1) + FRAME_HEAD_BYTES + 5] ^= 1
    other_sid, other_h = stored
    other = other_h.pack() + pack_frame(other_h, 0, os.urandom(other_h.block_size))
    return [
        (sid, bytes(corrupt), {}),                        # a frame fails its checksum: 409
        (sid, make_shard(index=2)[3], {}),                # another stripe's header
        (sid, body[:-1], {}),                             # ends inside a frame
        (sid, body[:10], {}),                             # not even a header
        (sid, body, {"X-Tessera-Segments": "2"}),
        (sid, body, {"X-Tessera-Segments": "4"}),
        (sid, body, {"X-Tessera-Segments": "x"}),
        (sid, body, {"X-Tessera-Replace": "yes"}),
        ("abc", body, {}),                                # a malformed id
        (other_sid, other, {}),                           # other bytes under a stored id
    ]


async def test_refusals_match_the_streamed_handler(node: Node) -> None:
    sid, h, blocks, body = make_shard(index=2, frames=3, block_size=4096, last=None)
    first_sid, first_h, _, first = make_shard(index=1, frames=1, block_size=4096, last=None)
    cases = _refused_cases((first_sid, first_h), sid, h, blocks, body)
    answers: dict[bool, list[tuple[int, str]]] = {}
    for chunked in (False, True):  # chunked: aiohttp's streamed handler
        reader, writer = await asyncio.open_connection(node.host, node.port)
        c = Conn(reader, writer)
        await c.send(put_request(node, first_sid, first, chunked=chunked))
        assert (await c.answer())[0] == 201  # stored once; the same bytes again: idempotent
        await c.send(put_request(node, first_sid, first, chunked=chunked))
        assert (await c.answer())[0] == 201
        got = []
        for case_sid, case_body, extra in cases:
            await c.send(put_request(node, case_sid, case_body, extra=extra, chunked=chunked))
            status, doc = await c.answer()
            got.append((status, json.loads(doc)["error"]))
        await c.send(put_request(node, sid, body, chunked=chunked, tamper=True))
        status, doc = await c.answer()
        got.append((status, json.loads(doc)["error"]))
        writer.close()
        await writer.wait_closed()
        answers[chunked] = got
        assert shard_path(node, first_sid).read_bytes() == first
        shard_path(node, first_sid).unlink()
    assert answers[False] == answers[True]
    assert [s for s, _ in answers[False]] == [409, 400, 400, 400, 400, 400, 400, 400, 400,
                                              409, 401]
    assert not shard_path(node, sid).exists()
    lean = [r for r in log_lines(node, f"/v1/shards/{sid}") if r.get("front") == "lean"]
    assert len(lean) == 9  # the first pass's refusals of `sid` went through the lean front


async def test_a_badly_signed_put_is_left_to_aiohttp_unbuffered(node: Node) -> None:
    sid, _, _, body = make_shard(index=0, frames=1, block_size=4096, last=None)
    async with aiohttp.ClientSession() as s:
        path = f"/v1/shards/{sid}"
        headers = sign(b"x" * 32, "PUT", path, "n1", trailer=True)
        async with s.put(node.url + path, data=seal(node.secret, headers, body),
                         headers=headers) as r:
            assert r.status == 401 and (await r.json())["message"] == "bad signature"
    (rec,) = await wait_lines(node, f"/v1/shards/{sid}", 1)
    assert "front" not in rec and rec["status"] == 401
    assert not shard_path(node, sid).exists()


TIGHT = ("import runpy, socket, sys; import nodes.leanput as lean; lean.KEEPALIVE_S = 2.0; "
         "lean.HANDED_HEAD_TIMEOUT_S = 2.0; "
         "lean.BODY_BUDGET.limit = 600_000; made = lean.LeanFront.connection_made\n"
         "def small(self, t):\n"
         "    t.get_extra_info('socket').setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)\n"
         "    t.get_extra_info('socket').setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)\n"
         "    made(self, t)\n"
         "lean.LeanFront.connection_made = small; sys.argv = ['nodes', *sys.argv[1:]]; "
         "runpy.run_module('nodes', run_name='__main__', alter_sys=True)")


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory,
          request: pytest.FixtureRequest) -> Node:
    """A real node process whose lean front keeps idle connections 2 s, gives a head
    aiohttp took over 2 s, and buffers at most 600,000 bytes of bodies at once (the
    defaults are 75 s, 20 s and 64 MiB), its connections'
    kernel send buffers small (loopback's grow to 4 MiB: a client not reading would have to
    leave ~16,000 answers unread before the node's own buffer filled) and receive buffers
    (64 KiB: what a node that stopped reading still takes is small and known)."""
    import subprocess
    import sys

    from storage.shards.auth import load_or_create_secret
    from tests.contract.node_harness import REPO, free_port, stop_node

    base = tmp_path_factory.mktemp("tight")
    secret = load_or_create_secret(base / "cluster.key")
    port = free_port()
    log = base / "node.stderr"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", TIGHT, "--id", "n1", "--listen", f"127.0.0.1:{port}",
             "--zone", "az1", "--data", str(base / "data"), "--secret-file",
             str(base / "cluster.key")], cwd=REPO, stdout=subprocess.PIPE, stderr=err,
            text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    request.addfinalizer(lambda: stop_node(proc))
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while " ready on " not in proc.stdout.readline():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
    return Node(url=f"http://127.0.0.1:{port}", host="127.0.0.1", port=port,
                data=base / "data", base=base, secret=secret, proc=proc, log=log)


async def test_a_body_still_arriving_is_not_cut_and_a_stalled_one_is(tight: Node) -> None:
    """The idle cut (2 s here) applies to a body only when it stops arriving: a slow upload
    whose whole takes longer is served; a head whose body never comes is closed."""
    sid, _, _, body = make_shard(index=0, frames=1, block_size=65536, last=None)
    wire = put_request(tight, sid, body)
    reader, writer = await asyncio.open_connection(tight.host, tight.port)
    conn = Conn(reader, writer)
    step = len(wire) // 8 + 1
    for at in range(0, len(wire), step):  # 8 pieces, 0.5 s apart: 4 s in all
        await conn.send(wire[at:at + step])
        if at + step < len(wire):
            await asyncio.sleep(0.5)  # a slow client's pace, not a synchronisation
    assert (await conn.answer())[0] == 201
    assert shard_path(tight, sid).read_bytes() == body
    sid2, _, _, body2 = make_shard(index=1, frames=1, block_size=65536, last=None)
    await conn.send(put_request(tight, sid2, body2)[:-1000])  # and then nothing
    assert await asyncio.wait_for(reader.read(), 30) == b""  # cut, not held
    writer.close()


async def test_a_head_handed_to_aiohttp_is_held_to_a_deadline_and_a_size(tight: Node) -> None:
    """A head past the lean front's 8 KiB goes to aiohttp, which had no deadline on it nor a
    cap on its lines' sum: trickled, it held the connection forever; grown, it held up to
    2 MiB of the node's memory. Now cut after the deadline (2 s here), and answered 431 and
    closed past `HEAD_MAX_BYTES`."""
    start = b"GET /v1/shards/x HTTP/1.1\r\nHost: x\r\n" + b"".join(
        b"x-pad-%d: %s\r\n" % (i, b"p" * 1000) for i in range(10))  # 10 KB, no end
    reader, writer = await asyncio.open_connection(tight.host, tight.port)
    await Conn(reader, writer).send(start)
    assert await asyncio.wait_for(reader.read(), 30) == b""  # cut, not held
    writer.close()
    grown = start + b"".join(b"x-more-%d: %s\r\n" % (i, b"p" * 8000) for i in range(10))
    reader, writer = await asyncio.open_connection(tight.host, tight.port)
    await Conn(reader, writer).send(grown)
    answer = await asyncio.wait_for(reader.read(), 30)
    assert answer.startswith(b"HTTP/1.1 431 ") and b'"too_large"' in answer
    writer.close()


async def test_bodies_past_the_budget_go_to_aiohttp(tight: Node) -> None:
    """Heads whose bodies have not arrived hold at most the budget (600,000 bytes here):
    past it a request is handed to aiohttp, which streams it, instead of a new buffer."""
    held = []
    for i in range(2):  # 2 x ~262 KiB buffers lent to bodies that never come
        sid, _, _, body = make_shard(index=i, frames=1, block_size=262144, last=None)
        r, w = await asyncio.open_connection(tight.host, tight.port)
        w.write(put_request(tight, sid, body)[:-4096])
        await w.drain()
        held.append(w)
    sid, _, _, body = make_shard(index=2, frames=1, block_size=262144, last=None)
    reader, writer = await asyncio.open_connection(tight.host, tight.port)
    conn = Conn(reader, writer)
    for _ in range(200):  # until both held heads were read (their log lines come at close)
        await conn.send(put_request(tight, sid, body))
        assert (await conn.answer())[0] == 201
        (rec,) = await wait_lines(tight, f"/v1/shards/{sid}", 1)
        if "front" not in rec:
            break
        sid, _, _, body = make_shard(index=2, frames=1, block_size=262144, last=None)
    assert "front" not in rec  # served by aiohttp: no lean buffer left to lend
    for w in held:
        w.close()
    writer.close()


async def test_a_pipelined_request_past_the_head_buffer_is_served(node: Node,
                                                                  conn: Conn) -> None:
    """A whole-shard PUT and a large one behind it in one write: the head buffer fills
    while the first is served; both are answered."""
    first = make_shard(index=0, frames=1, block_size=4096, last=None)
    second = make_shard(index=1, frames=1, block_size=240_000, last=None)
    await conn.send(put_request(node, first[0], first[3]) +
                    put_request(node, second[0], second[3]))
    assert (await conn.answer())[0] == 201
    assert (await conn.answer())[0] == 201
    assert shard_path(node, second[0]).read_bytes() == second[3]


async def test_answers_are_not_served_to_a_peer_that_does_not_read_them(tight: Node) -> None:
    """Write flow control: a client that pipelines requests but reads no answer stalls the
    connection once the node's answer buffer passes its high-water mark (the node stops
    serving and reading), instead of the node serving every request and holding all the
    answers in memory; once the client reads, every request is served, in order."""
    import socket

    n = 1000  # ~330 are served before the node's answer buffer passes its high-water mark
    node = tight
    sid = make_shard(index=0)[0]
    path = f"/v1/shards/{sid}"
    # cheap to serve: refused by the lean front before the disk (400 bad_request)
    wire = b"".join(put_request(node, sid, b"x" * 64, extra={"X-Tessera-Segments": "x"})
                    for _ in range(n))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small receive window
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (node.host, node.port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    writer.write(wire)  # no drain: the client's own buffer takes what the node does not
    served, still = 0, 0
    deadline = time.monotonic() + 120  # bounds a node that serves nothing at all
    # until every request was served, or none for 1 s once some were (a loaded box can
    # stall the node for a second before its first answer)
    while served < n and (still < 10 or not served) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        now = node.log.read_text().count(f'"path":"{path}"')
        served, still = now, (still + 1 if now == served else 0)
    assert 0 < served < n // 2, f"{served} of {n} served to a client reading nothing"
    conn = Conn(reader, writer)
    for _ in range(n):  # reading the answers lets the node go on
        status, doc = await conn.answer()
        assert status == 400 and json.loads(doc)["error"] == "bad_request"
    assert len(await wait_lines(node, path, n)) == n
    writer.close()
    await writer.wait_closed()


async def test_a_replayed_put_is_refused_by_the_lean_front(node: Node) -> None:
    """The same signed PUT sent on two connections at once: only one is served, the other is
    a replay (401), whether its head was read before the first body was in (checked once
    then, the replay caught after its body) or after (handed to aiohttp, which refuses it)."""
    sid, _, _, body = make_shard(index=0, frames=1, block_size=65536, last=None)
    wire = put_request(node, sid, body)
    conns = [Conn(*await asyncio.open_connection(node.host, node.port)) for _ in range(2)]
    for c in conns:  # every head in before any body is whole
        await c.send(wire[:-100])
    for c in conns:
        await c.send(wire[-100:])
    answers = sorted([(s, json.loads(doc)) for s, doc in [await c.answer() for c in conns]],
                     key=lambda a: a[0])
    assert answers[0][0] == 201
    assert answers[1] == (401, {"error": "unauthorized", "message": "replayed request"})
    assert shard_path(node, sid).read_bytes() == body
    lines = await wait_lines(node, f"/v1/shards/{sid}", 2)
    assert 201 in [r["status"] for r in lines if r.get("front") == "lean"]
    for c in conns:
        c.writer.close()


def test_pipelined_requests_handed_to_aiohttp_stop_the_reading(tight: Node) -> None:
    """aiohttp stops reading a connection once 32 requests wait in its queue; the hand-off
    resumed reading after giving aiohttp the first bytes, undoing such a pause for good, so
    a peer pipelining requests and reading no answer had the node read and hold all it sent
    (unauthenticated: 17 MB held per connection on `tessera up`'s nodes, 16 connections took
    one node from 60 to 318 MB). Now the node stops reading: the kernel's buffers (64 KiB
    here) and aiohttp's queue are all a client can fill."""
    import select
    import socket

    wire = b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n" * 250_000  # 8.25 MB, each answered 401
    sock = socket.create_connection((tight.host, tight.port))
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        sock.setblocking(False)
        sent = 0
        while sent < len(wire):
            try:
                sent += sock.send(wire[sent:sent + 65536])
            except BlockingIOError:  # the node took nothing more for 2 s: it stopped reading
                if not select.select([], [sock], [], 2.0)[1]:
                    break
            except OSError:  # or it closed the connection: it read no more either
                break
    finally:
        sock.close()
    assert sent < 2_000_000, f"the node read {sent} bytes of requests it had not served"
