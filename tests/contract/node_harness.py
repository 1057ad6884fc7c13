"""One storage node process for the node API contract tests (and the shard transfer and
rebuild tests built on it): start and stop, signed requests, shard bytes and paths."""

from __future__ import annotations

import asyncio
import json
import os
import select
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from ops.localports import free_port  # below the ephemeral range (its docstring)
from storage.shards.auth import load_or_create_secret, seal, sign
from storage.shards.format import ShardHeader, pack_frame
from storage.shards.ids import new_stripe_id, shard_id
from tests.held_shards import HeldShard, http_delete, shard_at

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 300.0  # a bound on a hung start, not on a slow one: a start at load 50-60
# took over 30 s (nothing in its log); a node that fails to start exits and says why at once
MAX_SHARD_BYTES = 16 * 1024 * 1024
WINDOW_S = 60


@dataclass
class Node:
    url: str
    host: str
    port: int
    data: Path
    base: Path
    secret: bytes
    proc: subprocess.Popen[str]
    log: Path


def start_node(base: Path, args: list[str]) -> tuple[subprocess.Popen[str], str, Path]:
    """Start a node process and block until it prints its readiness line."""
    log = base / f"node-{uuid.uuid4().hex[:8]}.stderr"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "nodes", *args], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=err, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + READY_TIMEOUT_S
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or proc.poll() is not None:
                pytest.fail(f"node did not become ready:\n{log.read_text()[-3000:]}")
            ready, _, _ = select.select([proc.stdout], [], [], left)
            if ready:
                line = proc.stdout.readline()
                if line.startswith("node ") and " ready on " in line:
                    return proc, line.split(" ready on ", 1)[1].strip(), log
    except BaseException:  # not ready, or the run interrupted (SIGTERM, Ctrl-C): no orphan
        stop_node(proc)
        raise


def stop_node(proc: subprocess.Popen[str]) -> int:
    if proc.poll() is None:
        proc.terminate()
        try:
            return proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Node:
    base = tmp_path_factory.mktemp("node")
    secret_file = base / "cluster.key"
    secret = load_or_create_secret(secret_file)
    data = base / "data"
    port = free_port()
    proc, url, log = start_node(base, [
        "--id", "n1", "--listen", f"127.0.0.1:{port}", "--zone", "az1", "--data", str(data),
        "--secret-file", str(secret_file), "--window", str(WINDOW_S),
        "--shard-size-limit", str(MAX_SHARD_BYTES)])
    request.addfinalizer(lambda: stop_node(proc))
    assert url == f"http://127.0.0.1:{port}"
    return Node(url=url, host="127.0.0.1", port=port, data=data, base=base, secret=secret,
                proc=proc, log=log)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
        yield s


class Api:
    def __init__(self, node: Node, http: aiohttp.ClientSession) -> None:
        self.node = node
        self.http = http

    async def call(self, method: str, path_qs: str, *, secret: bytes | None = None,
                   headers: dict[str, str] | None = None, signed: bool = True,
                   **kw: object) -> tuple[int, dict[str, str], bytes]:
        extra = dict(headers or {})
        tessera = {k: v for k, v in extra.items() if k.lower().startswith("x-tessera-")}
        streamed = method == "PUT" and path_qs.startswith("/v1/shards/")
        h: dict[str, str] = {}
        if signed:  # X-Tessera-* headers are signed; a shard PUT body gets its MAC trailer
            h = sign(secret or self.node.secret, method, path_qs, "n1", headers=tessera,
                     trailer=streamed)
            if streamed and isinstance(kw.get("data"), bytes):
                kw["data"] = seal(secret or self.node.secret, h, kw["data"])  # type: ignore
        h.update(extra)
        url = URL(self.node.url + path_qs, encoded=True)
        async with self.http.request(method, url, headers=h, **kw) as r:  # type: ignore[arg-type]
            return r.status, dict(r.headers), await r.read()

    async def json(self, method: str, path_qs: str, **kw: object) -> tuple[int, object]:
        status, _, body = await self.call(method, path_qs, **kw)
        return status, (json.loads(body) if body else None)


@pytest.fixture
def api(node: Node, http: aiohttp.ClientSession) -> Api:
    return Api(node, http)


def make_shard(index: int = 1, frames: int = 5, block_size: int = 4096,
               last: int | None = 100) -> tuple[str, ShardHeader, list[bytes], bytes]:
    h = ShardHeader(k=4, m=2, index=index, segment_size=block_size * 4, block_size=block_size,
                    stripe_id=new_stripe_id())
    blocks = [os.urandom(block_size) for _ in range(frames)]
    if last is not None and frames:
        blocks[-1] = os.urandom(last)
    body = h.pack() + b"".join(pack_frame(h, i, b) for i, b in enumerate(blocks))
    return shard_id(h.stripe_id, index), h, blocks, body


def shard_path(node: Node, sid: str) -> HeldShard:
    """Shard `sid` where the node reads it: its packed record, else its file (which may not
    exist); used like the file's Path (`tests.held_shards`)."""
    return shard_at(node.data, sid, http_delete(node.url, node.secret, "n1"))


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and directory below `root` (but the node logs, and the replay watermark that
    authenticated requests advance, on a worker thread) with size and mtime."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.suffix != ".stderr" and not p.name.startswith("replay-watermark"):
            st = p.stat()
            out[str(p)] = (st.st_size, st.st_mtime_ns) if p.is_file() else (0, 0)
    return out


async def wait_for_log(node: Node, request_id: str, timeout: float = 15.0) -> dict[str, object]:
    """The node's log line for one request (the node writes it when the request is done)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in node.log.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("request_id") == request_id and rec.get("msg") == "request":
                return rec
        await asyncio.sleep(0.02)
    raise AssertionError(f"no log line for request {request_id}")


async def raw_http(node: Node, head: str, body: bytes = b"", read: bool = True) -> bytes:
    """Send a hand-made request; optionally hang up without reading the answer."""
    reader, writer = await asyncio.open_connection(node.host, node.port)
    writer.write(head.encode() + body)
    await writer.drain()
    data = b""
    if read:  # the answer only: the node may linger to drain a body it refused
        data = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        length = next((int(line.split(b":", 1)[1]) for line in data.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        data += await asyncio.wait_for(reader.readexactly(length), 30)
    writer.close()
    await writer.wait_closed()
    return data


def request_head(node: Node, method: str, path: str, headers: dict[str, str]) -> str:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {node.host}:{node.port}", "Connection: close"]
    signed = sign(node.secret, method, path, "n1", trailer=method == "PUT")
    lines += [f"{k}: {v}" for k, v in {**signed, **headers}.items()]
    return "\r\n".join(lines) + "\r\n\r\n"


async def put_shard(api: Api, body: bytes, sid: str) -> None:
    status, doc = await api.json("PUT", f"/v1/shards/{sid}", data=body)
    assert status == 201, doc


def flip(node: Node, sid: str, offset: int) -> None:
    shard_path(node, sid).flip(offset, 0x20)


def quarantined(node: Node, sid: str) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in (node.data / "quarantine").glob(f"{sid}.*.json")]
