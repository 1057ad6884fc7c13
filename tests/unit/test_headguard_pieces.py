"""`CappedHandler` takes a head repeating one Content-Length however the head is cut into
reads (what the socket hands over is not what the client wrote: the integration test's
separate writes arrive as one read). The reads are fed to the handler one by one here, so
each boundary is the one named."""

from __future__ import annotations

import asyncio
import re
import socket

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.headguard import capped_handler, closing_answer

HEAD = (b"PUT /k HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nConnection: close\r\n"
        b"content-length: 5\r\n\r\nhello")


async def _answer(pieces: list[bytes]) -> bytes:
    async def echo(request: web.BaseRequest) -> web.Response:
        return web.Response(body=await request.read())

    server = web.Server(echo)
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    loop = asyncio.get_running_loop()
    handler = capped_handler(server, 20.0, 16384,
                             lambda: closing_answer(400, "text/plain", b"big"))
    transport, _ = await loop.connect_accepted_socket(lambda: handler, ours)
    try:
        for piece in pieces:  # one read each, in this order
            handler.data_received(piece)
        out = b""
        async with asyncio.timeout(30):
            while chunk := await loop.sock_recv(theirs, 65536):
                out += chunk
        return out
    finally:
        transport.close()
        theirs.close()
        await server.shutdown()


@pytest.mark.parametrize("cut", [len(b"PUT /k HTTP/1.1\r\nHost: h\r\nContent-Len"),
                                 len(b"PUT /k HTTP/1.1\r\nHost: h\r\n"),
                                 len(b"PUT /k HTTP/1.1\r\nHost: h\r"),
                                 HEAD.index(b"\r\n\r\n") + 3,
                                 HEAD.index(b"content-length") + 3,
                                 HEAD.index(b"\r\n\r\n") + 2])
def test_a_head_cut_anywhere_in_two_reads(cut: int) -> None:
    out = asyncio.run(_answer([HEAD[:cut], HEAD[cut:]]))
    assert out.startswith(b"HTTP/1.1 200 ") and out.endswith(b"hello"), out


def test_a_head_read_byte_by_byte() -> None:
    out = asyncio.run(_answer([HEAD[i:i + 1] for i in range(len(HEAD))]))
    assert out.startswith(b"HTTP/1.1 200 ") and out.endswith(b"hello"), out


CL_HEAD = b"PUT /k HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
BARE_LF = b"PUT /k HTTP/1.1\r\nHost: h\r\nContent-Length: 5\ncontent-length: 5\n"


@pytest.mark.parametrize("pieces", [
    [BARE_LF[:30], BARE_LF[30:]],  # no blank line ever comes: 400, not a wait for the timeout
    [BARE_LF[:30], BARE_LF[30:] + b"\n" + b"x" * 70000],  # 400, not 431: a body is no head
    [b"\x16\x03\x01\x02\x00\x01"],  # TLS on a plain port, no line end (as before)
    # a line the parser refuses after the first Content-Length (held until the blank line
    # before: no answer but the head timeout's close), in one read or cut inside the line
    *([CL_HEAD + bad[:cut], bad[cut:]] for bad in (
        b"Bad Name: v\r\n", b"NoColon\r\n", b"X-A: a\x01b\r\n", b"X-A: a\rb\r\n",
        b"content-length: 6\r\n", b"X-A: a\x00") for cut in (0, 3)),
    [CL_HEAD.replace(b": 5", b": 5x")],
    # review19e: DEL is a control byte the parser refuses too; a CR ending one read and
    # not followed by LF in the next is a bare CR (the line never ends)
    *([CL_HEAD + b"X-A: a\x7f"[:cut], b"X-A: a\x7f"[cut:]] for cut in (0, 3)),
    [CL_HEAD + b"X-A: a\r", b"b"], [CL_HEAD + b"X-A\r", b"b: v"],
])
def test_a_malformed_head_is_refused_at_once(pieces: list[bytes]) -> None:
    """The parser gets what it refuses without waiting for a blank line (the head timeout,
    20 s, is shorter than the wait for an answer: a held head gets none)."""
    out = asyncio.run(_answer(pieces))
    assert re.match(rb"HTTP/1\.[01] 400 ", out) and not out.endswith(b"big"), out


def test_every_cut_of_a_head_in_two_and_three_reads() -> None:
    """Each place a head can be cut: one same value is taken, differing values refused."""
    differing = HEAD.replace(b"content-length: 5", b"content-length: 6")

    async def all_cuts() -> None:
        for cut in range(1, len(HEAD)):
            out = await _answer([HEAD[:cut], HEAD[cut:]])
            assert out.startswith(b"HTTP/1.1 200 ") and out.endswith(b"hello"), (cut, out)
            out = await _answer([HEAD[:cut], HEAD[cut:cut + 7], HEAD[cut + 7:]])
            assert out.startswith(b"HTTP/1.1 200 ") and out.endswith(b"hello"), (cut, out)
            out = await _answer([differing[:cut], differing[cut:]])
            assert re.match(rb"HTTP/1\.[01] 400 ", out), (cut, out)
    asyncio.run(all_cuts())


LINES = [b"Host: h", b"Content-Length: 5", b"content-length: 5", b"CONTENT-LENGTH:5",
         b"content-length: 05", b"Connection: close", b"X-A: content-length: 5", b"X-B: a\rb",
         b" folded", b"Content-Length : 5", b"x-amz-meta-c: \xc3\xbc"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(LINES), max_size=6), st.integers(0, 6),
       st.sampled_from([b"\r\n", b"\n"]), st.lists(st.integers(1, 200), max_size=8))
def test_any_cut_answers_as_one_read(lines: list[bytes], at: int, eol: bytes,
                                     cuts: list[int]) -> None:
    """However a head is cut into reads, the answer is the one it gets read whole (its
    5-byte body announced at least once: bytes after it on a closing connection are refused
    only when they share its read)."""
    lines.insert(at % (len(lines) + 1), b"Content-Length: 5")
    head = (b"PUT /k HTTP/1.1\r\n" + b"".join(line + eol for line in [b"Connection: close",
                                                                       *lines]) + b"\r\nhello")
    bounds = sorted({c for c in cuts if c < len(head)})
    pieces = [head[a:b] for a, b in zip([0, *bounds], [*bounds, len(head)], strict=True)]

    def status(out: bytes) -> bytes:
        return out.split(b"\r\n", 1)[0].split(b" ", 1)[-1]
    assert status(asyncio.run(_answer(pieces))) == status(asyncio.run(_answer([head])))


@pytest.mark.parametrize("before", [b"", CL_HEAD, CL_HEAD + b"X-A: v", CL_HEAD + b"X-A: v\r"])
def test_aiohttps_empty_reparse_call_reaches_the_parser(
        before: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    """aiohttp calls data_received(b"") itself to re-parse what it buffered while reading
    was paused (dd4abf6: a node's streamed PUT stalled when the hold swallowed it); it must
    reach aiohttp's own data_received whatever the hold has, and not end the hold."""
    from aiohttp.web_protocol import RequestHandler
    seen: list[bytes] = []
    monkeypatch.setattr(RequestHandler, "data_received",
                        lambda self, data: seen.append(bytes(data)))

    async def run() -> None:
        server = web.Server(lambda r: web.Response())
        handler = capped_handler(server, 20.0, 16384,
                                 lambda: closing_answer(400, "text/plain", b"big"))
        handler.data_received(before)
        seen.clear()
        handler.data_received(b"")
        assert seen == [b""]
        await server.shutdown()
    asyncio.run(run())
