"""Gateway CPU per 1 MiB object of sending its six whole-shard PUTs (lean sender).

`tasks`: one task, `asyncio.timeout` and gather entry per shard (`request` each, the path
before session 8's send8 lane). `group`: `ShardSender.request_many` (all six written from
one coroutine, one future and one timer for their answers). The six "nodes" are a child
process answering each PUT with 201 once its body arrived, so only the sender's CPU is
counted (process time of this process).

    python benchmarks/shard_send_cpu.py [--objects 400] [--rounds 5] [--port 11350]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from storage.config import NodeSpec  # noqa: E402
from storage.shards.sender import ShardSender  # noqa: E402

SHARD = 262144 + 64
ANSWER = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}"


class _Node(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t, self.buf, self.need = transport, bytearray(), -1

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            if self.need < 0:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(self.buf[:end]).decode().lower()
                n = int(head.split("content-length:")[1].split("\r\n")[0])
                del self.buf[:end + 4]
                self.need = n
            if len(self.buf) < self.need:
                return
            del self.buf[:self.need]
            self.need = -1
            self.t.write(ANSWER)  # type: ignore[attr-defined]


def _serve(port: int, ready: multiprocessing.synchronize.Event) -> None:  # type: ignore[name-defined]
    async def run() -> None:
        loop = asyncio.get_running_loop()
        for i in range(6):
            await loop.create_server(_Node, "127.0.0.1", port + i)
        ready.set()
        await asyncio.Event().wait()
    asyncio.run(run())


async def _bench(port: int, objects: int, rounds: int) -> None:
    nodes = [NodeSpec(f"n{i}", "z", f"127.0.0.1:{port + i}") for i in range(6)]
    body = bytes(SHARD)

    def build(node: NodeSpec):  # type: ignore[no-untyped-def]
        head = (f"PUT /v1/shards/x HTTP/1.1\r\nHost: {node.address}\r\n"
                f"Content-Length: {SHARD}\r\n\r\n").encode()
        return lambda: [head, body]

    sender = ShardSender()
    builds = [(n, build(n)) for n in nodes]

    async def one(node: NodeSpec, b) -> None:  # type: ignore[no-untyped-def]
        async with asyncio.timeout(20):
            await sender.request(node, b)

    async def tasks() -> None:
        await asyncio.gather(*(one(n, b) for n, b in builds))

    async def group() -> None:
        got = await sender.request_many(builds, 20)
        assert all(isinstance(g, tuple) and g[0] == 201 for g in got), got

    await tasks()
    for _ in range(rounds):
        for name, fn in (("tasks", tasks), ("group", group)):
            t = time.process_time()
            for _ in range(objects):
                await fn()
            print(f"{name} {(time.process_time() - t) / objects * 1e6:.0f} us/object",
                  end="  ", flush=True)
        print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--port", type=int, default=11350)
    a = ap.parse_args()
    ready = multiprocessing.Event()
    proc = multiprocessing.Process(target=_serve, args=(a.port, ready), daemon=True)
    proc.start()
    try:
        ready.wait(10)
        asyncio.run(_bench(a.port, a.objects, a.rounds))
    finally:
        proc.terminate()
        proc.join()


if __name__ == "__main__":
    main()
