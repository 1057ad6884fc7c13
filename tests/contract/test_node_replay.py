"""Captured node requests cannot be replayed or altered, even across a `kill -9` of the node.

The requests are built by the gateway's own client code (`NodeClient.put_shard`) and
captured by a listener standing in for the node, as someone on the network would capture
them; then they are sent to a real node process, as is or with another body.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from storage.config import NodeSpec
from storage.shards.auth import TRAILER_BYTES, load_or_create_secret, seal, sign
from storage.shards.client import NodeClient, NodeError
from storage.shards.format import HEADER_BYTES, ShardHeader, pack_frame
from storage.shards.watermark import read_watermark
from tests.contract.node_harness import free_port, make_shard, shard_path, start_node, stop_node


@dataclass
class Captured:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Node:
    base: Path
    data: Path
    secret: bytes
    port: int
    args: list[str]
    proc: object = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc, _, _ = start_node(self.base, self.args)

    def kill9(self) -> None:
        self.proc.kill()  # type: ignore[attr-defined]
        self.proc.wait()  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    base = tmp_path_factory.mktemp("replay")
    secret_file = base / "cluster.key"
    secret = load_or_create_secret(secret_file)
    port = free_port()
    n = Node(base=base, data=base / "data", secret=secret, port=port, args=[
        "--id", "n1", "--listen", f"127.0.0.1:{port}", "--zone", "az1", "--data",
        str(base / "data"), "--secret-file", str(secret_file), "--window", "300"])
    n.start()
    yield n
    stop_node(n.proc)  # type: ignore[arg-type]


@pytest.fixture
async def capture() -> AsyncIterator[tuple[str, list[Captured]]]:
    """A listener that records every request (headers and whole body) and answers 201."""
    seen: list[Captured] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(Captured(request.method, request.path_qs, dict(request.headers),
                             await request.read()))
        return web.json_response({}, status=201)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"127.0.0.1:{port}", seen
    await runner.cleanup()


async def chunks(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


async def client_put(secret: bytes, address: str, sid: str, body: bytes, segments: int,
                     replace: bool = False) -> None:
    """One shard PUT exactly as the gateway sends it, to `address` (named node n1)."""
    async with aiohttp.ClientSession() as s:
        await NodeClient(s, secret).put_shard(NodeSpec("n1", "az1", address), sid,
                                              chunks(body), segments, len(body),
                                              replace=replace)


async def capture_put(cap: tuple[str, list[Captured]], secret: bytes, sid: str, body: bytes,
                      segments: int, replace: bool = False) -> Captured:
    address, seen = cap
    await client_put(secret, address, sid, body, segments, replace)
    return seen.pop()


async def send(node: Node, req: Captured, body: bytes | None = None) -> tuple[int, dict]:
    """Replay a captured request to the node, optionally with another body."""
    keep = {k: v for k, v in req.headers.items()
            if k.lower() not in ("host", "content-length", "transfer-encoding")}
    async with aiohttp.ClientSession() as s, s.request(
            req.method, URL(node.url + req.path, encoded=True), headers=keep,
            data=req.body if body is None else body) as r:
        return r.status, json.loads(await r.read() or b"{}")


def other_body(sid_body: bytes, frames: int) -> bytes:
    """Another valid shard file for the same id: same header, other blocks, right CRCs."""
    h = ShardHeader.unpack(sid_body[:HEADER_BYTES])
    return h.pack() + b"".join(pack_frame(h, i, os.urandom(h.block_size))
                               for i in range(frames))


async def test_captured_put_cannot_be_replayed_or_altered_across_kill9(
        node: Node, capture: tuple[str, list[Captured]]) -> None:
    sid, _, _, body = make_shard(index=2, frames=4, block_size=16 * 1024, last=None)
    forged = other_body(body, 4)
    req = await capture_put(capture, node.secret, sid, body, 4)
    assert req.body[:-TRAILER_BYTES] == body  # then the body MAC trailer
    assert len(req.body) == len(body) + TRAILER_BYTES

    # Altered in flight, the same headers carry another body of valid frames: refused.
    status, doc = await send(node, req, forged + req.body[-TRAILER_BYTES:])
    assert status == 401 and doc["message"] == "body does not match its signed MAC"
    assert not shard_path(node, sid).exists()  # type: ignore[arg-type]

    # Delivered as sent: stored; the same request again in the same process life: refused.
    req = await capture_put(capture, node.secret, sid, body, 4)
    assert (await send(node, req))[0] == 201
    status, doc = await send(node, req)
    assert status == 401 and doc["message"] == "replayed request"

    # A repair request (the one kind allowed to replace a shard) captured before a crash.
    repair = await capture_put(capture, node.secret, sid, forged, 4, replace=True)
    node.kill9()
    node.start()
    for req_, sent in ((req, None), (repair, None), (req, forged + req.body[-TRAILER_BYTES:])):
        status, doc = await send(node, req_, sent)
        assert status == 401 and doc["message"] == "request predates the node's start", doc
    assert shard_path(node, sid).read_bytes() == body  # type: ignore[arg-type]

    # After the restart, an altered repair request is refused too, and the shard is intact.
    repair = await capture_put(capture, node.secret, sid, body, 4, replace=True)
    status, doc = await send(node, repair, forged + repair.body[-TRAILER_BYTES:])
    assert status == 401 and doc["message"] == "body does not match its signed MAC"
    assert shard_path(node, sid).read_bytes() == body  # type: ignore[arg-type]
    assert list((node.data / "tmp").iterdir()) == []


async def test_put_never_clobbers_a_committed_shard_unless_it_is_a_repair(node: Node) -> None:
    sid, _, _, body = make_shard(index=1, frames=3, block_size=8 * 1024, last=None)
    forged = other_body(body, 3)
    address = f"127.0.0.1:{node.port}"
    await client_put(node.secret, address, sid, body, 3)
    with pytest.raises(NodeError) as err:  # a plain write with other bytes: 409
        await client_put(node.secret, address, sid, forged, 3)
    assert err.value.status == 409 and "shard_exists" in str(err.value)
    assert shard_path(node, sid).read_bytes() == body  # type: ignore[arg-type]
    await client_put(node.secret, address, sid, body, 3)  # identical bytes: idempotent
    await client_put(node.secret, address, sid, forged, 3, replace=True)  # a repair
    assert shard_path(node, sid).read_bytes() == forged  # type: ignore[arg-type]
    assert list((node.data / "tmp").iterdir()) == []


async def test_unsealed_put_and_unsigned_flags_are_refused(node: Node) -> None:
    sid, _, _, body = make_shard(index=0, frames=2)
    path = f"/v1/shards/{sid}"
    async with aiohttp.ClientSession() as s:
        # Signed, but the body carries no MAC trailer (the v1 way): refused.
        async with s.put(node.url + path, data=body,
                         headers=sign(node.secret, "PUT", path, "n1")) as r:
            assert r.status == 401
        # The replace flag added to a signed request after signing: the MAC fails.
        hdrs = sign(node.secret, "PUT", path, "n1", trailer=True)
        async with s.put(node.url + path, data=body + b"\0" * TRAILER_BYTES,
                         headers={**hdrs, "X-Tessera-Replace": "1"}) as r:
            assert r.status == 401 and (await r.json())["message"] == "bad signature"
    assert not shard_path(node, sid).exists()  # type: ignore[arg-type]


async def test_future_dated_request_cannot_be_replayed_after_kill9(node: Node) -> None:
    """A gateway whose clock runs 35 s ahead signs a repair PUT; it is used once, and replayed
    after a `kill -9` and restart of the node. Its date is after the new process's start, so
    the start-time rule alone let it through (rolling the shard back to the captured bytes);
    the node's persisted watermark (>= every date it accepted) refuses it."""
    sid, _, _, body = make_shard(index=3, frames=2, block_size=8 * 1024, last=None)
    newer = other_body(body, 2)
    path = f"/v1/shards/{sid}"
    ahead = time.time() + 35  # the gateway's clock

    def signed(data: bytes, now: float) -> tuple[dict[str, str], bytes]:
        hdrs = sign(node.secret, "PUT", path, "n1", now=now, trailer=True,
                    headers={"X-Tessera-Segments": "2", "X-Tessera-Replace": "1"})
        return hdrs, seal(node.secret, hdrs, data)

    captured = Captured("PUT", path, *signed(body, ahead))
    assert (await send(node, captured))[0] == 201
    await client_put(node.secret, f"127.0.0.1:{node.port}", sid, newer, 2, replace=True)
    assert shard_path(node, sid).read_bytes() == newer  # type: ignore[arg-type]
    assert read_watermark(node.data / "replay-watermark")[0] >= ahead
    node.kill9()
    node.start()
    status, doc = await send(node, captured)
    assert status == 401 and doc["message"] == "request predates the node's start", doc
    assert shard_path(node, sid).read_bytes() == newer  # type: ignore[arg-type]
    # The same gateway's next request (its clock still ahead, a little later) is accepted;
    # dated after the restart too, in case that took longer than the clock is ahead (load)
    fresh = Captured("PUT", path, *signed(newer, max(ahead, time.time()) + 3))
    assert (await send(node, fresh))[0] == 201
    assert shard_path(node, sid).read_bytes() == newer  # type: ignore[arg-type]
