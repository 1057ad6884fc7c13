"""Where aiohttp's own CPU per small request goes: null servers that add one part at a time.

Each variant serves the same canned 4 KiB GET (or takes a 4 KiB PUT body) in one process,
driven by keep-alive raw-socket clients in the same loop (`request_path_ab.py`'s client),
and reports process CPU per request (client included: the same for every variant).
Variants, each one step above the previous:

- `protocol`: a bare `asyncio.Protocol` (split the head, Content-Length, one write);
- `parser`: the same protocol feeding aiohttp's C `HttpRequestParser` (headers parsed into
  a `CIMultiDict`, URL into a `yarl.URL`) and its payload `StreamReader`;
- `server-response`: aiohttp's low-level `web.Server` returning a `web.Response`
  (request object, handler task, response object, header serialisation, keep-alive);
- `s3-response`: the same with the S3 listener's server (`gateway/app.py`: `S3Request`,
  `_stamp`, its limits and keep-alive);
- `s3-stream`: that with GetObject's small-body response before session 9 instead: a
  prepared stream with the headers held for the first write, written through
  `BorrowedBodyWriter`, then ended (`s3-response` is what GetObject sends now);
- `s3-lean`: `parser` building the same `S3Request` and running the same handler and
  `prepare` + `write_eof` of its `web.Response` inline from `data_received` (no
  `RequestHandler`: no per-request task, waiter future or start loop). Against
  `s3-response` it is what a lean front keeping aiohttp's request and response objects
  would save (a null handler never suspends, so the coroutine is driven by hand; not a
  server: no pipelining, keep-alive or error rules).

The differences between rows are the parts' costs. On a loaded box read the medians.

    python benchmarks/aiohttp_parts.py --op get --rounds 8 --port 10530
    python benchmarks/aiohttp_parts.py --variants s3-response,s3-lean --rounds 10
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiohttp import web  # noqa: E402
from aiohttp.http_parser import HttpRequestParser  # noqa: E402
from aiohttp.http_writer import StreamWriter  # noqa: E402

from benchmarks.request_path_ab import _round  # noqa: E402
from gateway.app import CLIENT_MAX_BYTES, S3Request  # noqa: E402

BODY = os.urandom(4096)
HEAD_200 = (b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
            b"x-amz-request-id: 0123456789ABCDEF\r\nx-amz-id-2: tessera\r\n")


def _canned(op: str) -> bytes:
    body = BODY if op == "get" else b""
    return HEAD_200 + f"Content-Length: {len(body)}\r\n\r\n".encode() + body


class BareProtocol(asyncio.Protocol):
    """Head split by hand, body skipped by Content-Length, one write per request."""

    def __init__(self, op: str) -> None:
        self.reply, self.buf, self.need = _canned(op), b"", 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            if self.need:
                take = min(self.need, len(self.buf))
                self.buf, self.need = self.buf[take:], self.need - take
                if self.need:
                    return
                self.transport.write(self.reply)
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self.buf = self.buf[:end], self.buf[end + 4:]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length:
                self.need = length
                continue
            self.transport.write(self.reply)


class ParserProtocol(BareProtocol):
    """aiohttp's C parser does the splitting (messages and payload readers)."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        loop = asyncio.get_running_loop()
        self.parser = HttpRequestParser(self, loop, 2 ** 16, max_field_size=16384,
                                        max_line_size=16384)

    def pause_reading(self, **_: Any) -> None:  # the payload readers' flow control
        self.transport.pause_reading()

    def resume_reading(self, **_: Any) -> None:
        self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        messages, _, _ = self.parser.feed_data(data)
        for _, payload in messages:
            payload.read_nowait()
            self.transport.write(self.reply)


class LeanS3Protocol(ParserProtocol):
    """`parser` + the S3 listener's request object, handler and response, inline."""

    ssl_context = None
    peername = ("127.0.0.1", 0)
    sockname = ("127.0.0.1", 0)
    _paused = False  # StreamWriter.drain's check (never paused here)

    def __init__(self, op: str) -> None:
        super().__init__(op)
        self.handle = _handler(op, stream=False)

    def data_received(self, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        messages, _, _ = self.parser.feed_data(data)
        for message, payload in messages:
            request = S3Request(message, payload, self, StreamWriter(self, loop),  # type: ignore[arg-type]
                                None, loop, client_max_size=CLIENT_MAX_BYTES)  # type: ignore[arg-type]
            try:
                self._serve(request).send(None)
            except StopIteration:
                continue
            raise RuntimeError("a null handler suspended")

    async def _serve(self, request: web.BaseRequest) -> None:
        resp = await self.handle(request)
        await resp.prepare(request)
        await resp.write_eof()
        request._finish()


class HeldHeaders(web.StreamResponse):
    """A stream whose status line and headers wait for the first body write (GetObject's
    small-body response before session 9)."""

    _send_headers_immediately = False


def _handler(op: str, stream: bool) -> Callable[[web.BaseRequest],
                                                  Awaitable[web.StreamResponse]]:
    """The null handler: a canned 4 KiB GET body, or a 4 KiB PUT body taken."""
    from gateway.s3.sendbody import BorrowedBodyWriter

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        request["request_id"] = "0123456789ABCDEF"
        if op == "put":
            request.content.read_nowait()
        headers = {"Content-Type": "application/octet-stream"}
        if not stream:
            return web.Response(body=BODY if op == "get" else None, headers=headers)
        resp = HeldHeaders(headers=headers)
        resp.content_length = len(BODY) if op == "get" else 0
        await resp.prepare(request)
        if op == "get":
            async with BorrowedBodyWriter(request, resp) as body:
                await body.write(BODY)
        await resp.write_eof()
        return resp
    return handle


def _server(op: str, stream: bool, s3: bool) -> web.Server:
    from gateway.app import create_s3_server

    class Handler:
        handle = staticmethod(_handler(op, stream))

    if s3:
        return create_s3_server(Handler())  # type: ignore[arg-type]
    return web.Server(Handler.handle, access_log=None)


async def _listen(variant: str, op: str, port: int) -> Callable[[], Awaitable[None]]:
    loop = asyncio.get_running_loop()
    if variant in ("protocol", "parser", "s3-lean"):
        cls = {"protocol": BareProtocol, "parser": ParserProtocol,
               "s3-lean": LeanS3Protocol}[variant]
        srv = await loop.create_server(lambda: cls(op), "127.0.0.1", port)

        async def close() -> None:
            srv.close()
        return close
    runner = web.ServerRunner(_server(op, variant.endswith("stream"), variant.startswith("s3")),
                              handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner.cleanup


def _raw(op: str, i: int) -> bytes:
    head = (f"{op.upper()} /b/obj-{i % 64} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "x-amz-date: 20261206T040000Z\r\nx-amz-content-sha256: UNSIGNED-PAYLOAD\r\n"
            "Authorization: AWS4-HMAC-SHA256 Credential=AKEXAMPLE/20261206/us-east-1/s3/"
            "aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature="
            + "0" * 64 + "\r\n")
    if op == "put":
        return (head + f"Content-Length: {len(BODY)}\r\n\r\n").encode() + BODY
    return (head + "\r\n").encode()


VARIANTS = ("protocol", "parser", "server-response", "s3-response", "s3-stream", "s3-lean")


async def run(a: argparse.Namespace) -> None:
    variants = tuple(a.variants.split(","))
    results: dict[str, list[float]] = {v: [] for v in variants}
    reqs = [_raw(a.op, i) for i in range(a.requests)]
    for r in range(a.rounds):
        order = variants if r % 2 == 0 else tuple(reversed(variants))
        for v in order:
            close = await _listen(v, a.op, a.port)
            try:
                results[v].append(await _round(a.port, reqs, a.clients))
            finally:
                await close()
    first = variants[0]
    base = statistics.median(results[first])
    for v in variants:
        m = statistics.median(results[v])
        rounds = " ".join(f"{x * 1e3:.3f}" for x in results[v])
        print(f"{a.op} {v:16s} {m * 1e3:.3f} ms/op  ({(m - base) * 1e6:+.0f} us over {first}; "
              f"rounds {rounds})")
    print(f"load {os.getloadavg()[0]:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--op", choices=("get", "put"), default="get")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--requests", type=int, default=2000, help="per round and variant")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--port", type=int, default=10530)
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help="comma-separated, compared with the first")
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
