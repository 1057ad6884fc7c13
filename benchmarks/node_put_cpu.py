"""Node CPU per shard PUT: one real node process, N shard PUTs of SIZE bytes at concurrency C.

Sent with the gateway's own client (`NodeClient.put_shard`, streamed with its body MAC, or
`put_small`, batched), so the figure is what one shard write of an object costs the node:
user and system CPU of the node process from /proc, per PUT. Compare a 4 KiB and a 256 KiB
run to split the per-request cost from the per-byte cost (a 1 MiB object at 4+2 is six
shard PUTs of 262,200 bytes).

    python benchmarks/node_put_cpu.py --size 262144 -n 300 -c 3 [--batch | --get | --whole]

With `--whole` each shard goes as bytes, through the lean sender the gateway uses for a
one-segment object's shards (the body is the same on the wire).

With `--get` the shards are stored first (untimed) and the timed requests are shard GETs
(`NodeClient.read_frames`, the whole shard): the node CPU per shard GET. With `--into` as
well, through the gateway's lean fetcher (`read_frames_into`, pooled buffers), and this
process's CPU per GET is reported too (the gateway's side of a shard GET).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from storage.buffers import BufferPool  # noqa: E402
from storage.config import NodeSpec  # noqa: E402
from storage.shards.auth import load_or_create_secret  # noqa: E402
from storage.shards.client import NodeClient  # noqa: E402
from storage.shards.format import HEADER_BYTES  # noqa: E402
from tests.contract.test_node_api import free_port, make_shard, start_node, stop_node  # noqa: E402


def _cpu(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of one process."""
    with open(f"/proc/{pid}/stat") as f:
        raw = f.read()
    fields = raw[raw.rindex(")") + 2:].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


async def _one(body: bytes) -> AsyncIterator[bytes]:
    yield body


async def _framed(header: bytes, frames: list[bytes]) -> AsyncIterator[bytes]:
    """The shard as the gateway streams it: the header with the first frame, then one
    chunk per frame."""
    yield header + frames[0]
    for f in frames[1:]:
        yield f


def _frame_list(body: bytes, count: int) -> list[bytes]:
    """The frames of a shard body of `count` equal frames (header excluded)."""
    step = (len(body) - HEADER_BYTES) // count
    return [body[HEADER_BYTES + i * step:HEADER_BYTES + (i + 1) * step] for i in range(count)]


async def run(size: int, count: int, concurrency: int, batch: bool,
              get: bool = False, frames: int = 1, whole: bool = False,
              into: bool = False) -> dict[str, float]:
    base = Path(tempfile.mkdtemp(prefix="node-put-cpu-"))
    key = base / "cluster.key"
    secret = load_or_create_secret(key)
    port = free_port()
    proc, _, _ = start_node(base, ["--id", "n1", "--listen", f"127.0.0.1:{port}", "--zone",
                                   "az1", "--data", str(base / "data"), "--secret-file",
                                   str(key)])
    try:
        node = NodeSpec("n1", "az1", f"127.0.0.1:{port}")
        shards = [make_shard(index=i % 6, frames=frames, block_size=size, last=None)
                  for i in range(count + concurrency)]
        async with aiohttp.ClientSession() as s:
            client = NodeClient(s, secret)  # as Cluster.open wires it
            pool = BufferPool()

            async def put(shard: tuple) -> None:
                sid, _, blocks, body = shard
                if batch:
                    await client.put_small(node, sid, body, len(blocks))
                elif whole:
                    await client.put_shard(node, sid, body, len(blocks))
                else:
                    await client.put_shard(node, sid, _one(body) if frames == 1 else _framed(
                        body[:HEADER_BYTES], _frame_list(body, len(blocks))),
                        len(blocks), len(body))

            async def read(shard: tuple) -> None:
                sid, header, blocks, _ = shard
                if batch:
                    await client.read_small(node, sid, header, 0, len(blocks))
                    return
                if into:
                    async for _, _, buf in client.read_frames_into(node, sid, header, 0,
                                                                   len(blocks), pool):
                        pool.give(buf)
                    return
                async for _ in client.read_frames(node, sid, header, 0, len(blocks)):
                    pass

            if get:
                for shard in shards:
                    await put(shard)
                for shard in shards[:concurrency]:  # warm up the connections
                    await read(shard)
            else:
                for shard in shards[:concurrency]:  # warm up the connections
                    await put(shard)
            todo = shards[concurrency:]
            op = read if get else put
            before, t0, mine = _cpu(proc.pid), time.perf_counter(), time.process_time()

            async def worker() -> None:
                while todo:
                    await op(todo.pop())

            await asyncio.gather(*(worker() for _ in range(concurrency)))
            after, seconds = _cpu(proc.pid), time.perf_counter() - t0
            mine = time.process_time() - mine
    finally:
        stop_node(proc)
        shutil.rmtree(base, ignore_errors=True)
    return {"user_ms": (after[0] - before[0]) / count * 1e3,
            "sys_ms": (after[1] - before[1]) / count * 1e3,
            "puts_per_s": count / seconds, "load": os.getloadavg()[0],
            "client_ms": mine / count * 1e3}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=262144, help="shard block bytes (one frame)")
    ap.add_argument("-n", type=int, default=300, help="timed PUTs")
    ap.add_argument("-c", type=int, default=3, help="concurrent PUTs")
    ap.add_argument("--batch", action="store_true",
                    help="POST /v1/batch instead of streaming (with --get: batched reads)")
    ap.add_argument("--get", action="store_true", help="time shard GETs, not PUTs")
    ap.add_argument("--whole", action="store_true",
                    help="send each shard as bytes through the lean sender (as the gateway "
                         "sends a one-segment object's shards)")
    ap.add_argument("--frames", type=int, default=1,
                    help="frames per shard, streamed one chunk per frame as the gateway "
                         "does (64 x 262144 is a shard of a 64 MiB object)")
    ap.add_argument("--into", action="store_true",
                    help="with --get: read through the gateway's lean fetcher")
    a = ap.parse_args()
    r = asyncio.run(run(a.size, a.n, a.c, a.batch, a.get, a.frames, a.whole, a.into))
    kind = "GET" if a.get else "PUT"
    gb = a.frames * a.size / 1e9
    print(f"size {a.size} x{a.frames} frames c={a.c} n={a.n} {'batch' if a.batch else 'whole' if a.whole else 'stream'}: node CPU per {kind} "
          f"user {r['user_ms']:.2f} ms + sys {r['sys_ms']:.2f} ms = "
          f"{r['user_ms'] + r['sys_ms']:.2f} ms ({(r['user_ms'] + r['sys_ms']) / 1e3 / gb:.2f} s/GB); "
          f"{r['puts_per_s']:.1f} {kind}s/s; client CPU {r['client_ms']:.2f} ms; "
          f"load average {r['load']:.1f}")


if __name__ == "__main__":
    main()
