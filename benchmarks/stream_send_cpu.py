"""Sender CPU per GB of streamed shard PUTs: aiohttp's client (the gateway's path before
`storage.shards.streamput`) against the `StreamPutter`, to a sink node in another process.

    python benchmarks/stream_send_cpu.py [--mib 16] [--frame-kib 1024] [-n 64] [-c 4]

The sink reads each request head, `recv_into`s its Content-Length body into one reused
buffer and answers 201: only the sender's side differs. Each variant runs `--rounds` times,
alternating; the figure is the sender process's user+system CPU-s per GB of body sent.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import aiohttp

from storage.config import NodeSpec
from storage.shards.streamput import StreamPutter

SINK = r"""
import socket, sys, threading
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0)); srv.listen(64); print(srv.getsockname()[1], flush=True)
def serve(c):
    buf = bytearray(1 << 20); view = memoryview(buf); head = b""
    while True:
        while b"\r\n\r\n" not in head:
            d = c.recv(65536)
            if not d: return
            head += d
        h, _, rest = head.partition(b"\r\n\r\n")
        n = next(int(l.split(b":")[1]) for l in h.split(b"\r\n") if l.lower().startswith(b"content-length"))
        n -= len(rest); head = b""
        while n > 0:
            got = c.recv_into(view[:min(n, len(buf))])
            if not got: return
            n -= got
        c.sendall(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}")
while True:
    c, _ = srv.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


async def _frames(frame: bytes, count: int) -> AsyncIterator[bytes]:
    for _ in range(count):
        yield frame


async def run(variant: str, port: int, mib: int, frame_kib: int, n: int, c: int) -> float:
    spec = NodeSpec("n1", "az1", f"127.0.0.1:{port}")
    frame = os.urandom(frame_kib * 1024)
    count = mib * 1024 // frame_kib
    length = len(frame) * count
    gate = asyncio.Semaphore(c)
    putter = StreamPutter()
    head = (f"PUT /v1/shards/x HTTP/1.1\r\nHost: {spec.address}\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()
    async with aiohttp.ClientSession() as session:
        async def one() -> None:
            async with gate:
                if variant == "aiohttp":
                    async with session.put(spec.url + "/v1/shards/x",
                                           data=_frames(frame, count),
                                           headers={"Content-Length": str(length)}) as r:
                        assert r.status == 201
                else:
                    status, _ = await putter.put(spec, head, _frames(frame, count))
                    assert status == 201
        await asyncio.gather(*(one() for _ in range(c)))  # warm-up: connections
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        await asyncio.gather(*(one() for _ in range(n)))
        r1 = resource.getrusage(resource.RUSAGE_SELF)
    putter.close()
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return cpu / (n * length / 1e9)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=16)
    ap.add_argument("--frame-kib", type=int, default=1024)
    ap.add_argument("-n", type=int, default=64)
    ap.add_argument("-c", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    sink = subprocess.Popen([sys.executable, "-c", SINK], stdout=subprocess.PIPE, text=True)
    try:
        assert sink.stdout is not None
        port = int(sink.stdout.readline())
        for r in range(a.rounds):
            for variant in (("aiohttp", "streamput") if r % 2 == 0 else ("streamput", "aiohttp")):
                t = time.perf_counter()
                s_gb = asyncio.run(run(variant, port, a.mib, a.frame_kib, a.n, a.c))
                print(f"{variant:10s} {s_gb:.3f} s/GB sender CPU  ({time.perf_counter() - t:.1f}s, "
                      f"load {os.getloadavg()[0]:.1f})", flush=True)
    finally:
        sink.kill()
        sink.wait()


if __name__ == "__main__":
    main()
