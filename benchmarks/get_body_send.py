"""CPU of sending GET bodies through `BorrowedBodyWriter` (gateway/s3/sendbody.py) alone.

An aiohttp server in this process answers `--count` GETs of `--size` bytes each, written
as borrowed 1 MiB views of one reused buffer through the GET handler's response class
and writer; a client process reads them over keep-alive connections (`--conns` at once,
a 1 MiB `recv_into` each). Prints this process's CPU (user + system) per GET and per GB:
run it from two trees (PYTHONPATH) alternately to compare their send paths.

    PYTHONPATH=. python benchmarks/get_body_send.py --size 1MiB --count 2000
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import resource
import socket
import time

from aiohttp import web

from gateway.s3 import sendbody

CHUNK = 1024 * 1024


def _size(text: str) -> int:
    units = {"KiB": 1 << 10, "MiB": 1 << 20}
    for u, m in units.items():
        if text.endswith(u):
            return int(text[:-len(u)]) * m
    return int(text)


def _client(port: int, size: int, count: int) -> None:
    s = socket.create_connection(("127.0.0.1", port))
    buf = bytearray(CHUNK)
    pending = b""
    for _ in range(count):
        s.sendall(b"GET /o HTTP/1.1\r\nHost: x\r\n\r\n")
        data = pending
        while b"\r\n\r\n" not in data:
            data += s.recv(65536)
        head, _, data = data.partition(b"\r\n\r\n")
        left = size - len(data)
        while left > 0:
            n = s.recv_into(buf, min(left, CHUNK))
            if n == 0:
                raise SystemExit("short body")
            left -= n
        pending = b""
    s.close()


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def main(size: int, count: int, conns: int) -> None:
    held = getattr(sendbody, "HeldHeadResponse", web.StreamResponse)
    body = bytearray(CHUNK)

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = held(status=200, headers={"ETag": '"x"', "Last-Modified": "now"})
        resp.content_length = size
        await resp.prepare(request)
        async with sendbody.BorrowedBodyWriter(request, resp) as w:
            for at in range(0, size, CHUNK):
                await w.write(memoryview(body)[:min(CHUNK, size - at)])
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/o", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_client, args=(port, size, count // conns)) for _ in range(conns)]
    c0, t0 = _cpu(), time.perf_counter()
    for p in procs:
        p.start()
    while any(p.is_alive() for p in procs):
        await asyncio.sleep(0.05)
    c1, t1 = _cpu(), time.perf_counter()
    await runner.cleanup()
    n = count // conns * conns
    print(f"{n} GETs of {size} B: {(c1 - c0) / n * 1e3:.3f} ms CPU per GET, "
          f"{(c1 - c0) / (n * size / 1e9):.3f} s/GB, wall {t1 - t0:.1f} s")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="1MiB")
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--conns", type=int, default=4)
    a = ap.parse_args()
    asyncio.run(main(_size(a.size), a.count, a.conns))
