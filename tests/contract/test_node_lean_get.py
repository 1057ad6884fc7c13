"""Shard GETs from the first frame in the node's lean front (`nodes.leanget`), against a real
node process: served there with aiohttp's answers, refusals, quarantines and log lines;
reads from a later frame and other queries are handed to aiohttp with the bytes received."""

from __future__ import annotations

import asyncio
import json

from storage.shards.auth import sign
from storage.shards.format import (
    FRAME_HEAD_BYTES,
    HEADER_BYTES,
    READER_CHECKS,
    READER_CHECKS_HEADER,
)
from tests.contract.node_harness import Node, make_shard, node, shard_path
from tests.contract.test_node_lean_front import Conn, conn, log_lines, put_request, wait_lines

__all__ = ["conn", "node"]  # fixtures: the module's node process, a connection to it


def get_request(node: Node, path_qs: str, *, secret: bytes | None = None,
                close: bool = False, reader_checks: bool = False) -> bytes:
    headers = sign(secret or node.secret, "GET", path_qs, "n1", headers={
        READER_CHECKS_HEADER: READER_CHECKS} if reader_checks else None)
    return (f"GET {path_qs} HTTP/1.1\r\nHost: {node.host}:{node.port}\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items())
        + ("Connection: close\r\n" if close else "") + "\r\n").encode()


async def stored(node: Node, conn: Conn, index: int, frames: int, block_size: int,
                 last: int | None) -> tuple[str, bytes]:
    """A shard PUT through `conn`: (its id, its bytes)."""
    sid, _, _, body = make_shard(index, frames, block_size, last)
    await conn.send(put_request(node, sid, body))
    assert (await conn.answer_with_headers())[0] == 201
    return sid, body


async def test_gets_from_the_first_frame_are_served_by_the_lean_front(node: Node,
                                                                     conn: Conn) -> None:
    sid, body = await stored(node, conn, index=0, frames=3, block_size=65536, last=None)
    one = HEADER_BYTES + (len(body) - HEADER_BYTES) // 3  # header and frame 0 (of 3 equal)
    for path_qs, want in ((f"/v1/shards/{sid}", body),
                          (f"/v1/shards/{sid}?first=0&count=3", body),
                          (f"/v1/shards/{sid}?first=0&count=9", body),
                          (f"/v1/shards/{sid}?first=0&count=1", body[:one])):
        await conn.send(get_request(node, path_qs))
        status, headers, got = await conn.answer_with_headers()
        assert (status, got) == (200, want)
        assert headers["x-tessera-segments"] == "3"
        assert headers["content-type"] == "application/octet-stream"
        assert headers["x-request-id"] and "connection" not in headers
    recs = [r for r in await wait_lines(node, f"/v1/shards/{sid}", 5) if r["op"] == "get"]
    assert [(r["front"], r["status"], r["query"], r["bytes"]) for r in recs] == [
        ("lean", 200, "", len(body)), ("lean", 200, "first=0&count=3", len(body)),
        ("lean", 200, "first=0&count=9", len(body)), ("lean", 200, "first=0&count=1", one)]


async def test_refusals_match_aiohttps(node: Node, conn: Conn) -> None:
    """Each refusal twice: as a read from frame 0 (lean) and with the query's parameters
    swapped (the same read, but aiohttp's); the answers are the same."""
    sid, body = await stored(node, conn, index=1, frames=2, block_size=4096, last=None)
    h = make_shard()[1]
    bad = [await stored(node, conn, index=i, frames=2, block_size=4096, last=None)
           for i in (2, 3)]
    for bad_sid, _ in bad:  # frame 0 fails its check: 409 and quarantined
        path = shard_path(node, bad_sid)
        raw = bytearray(path.read_bytes())
        raw[h.frame_offset(0) + FRAME_HEAD_BYTES + 3] ^= 1
        path.write_bytes(bytes(raw))
    missing = make_shard(index=4)[0]
    answers = []
    for form, bad_sid in (("first=0&count=2", bad[0][0]), ("count=2&first=0", bad[1][0])):
        got = []
        for path_qs, secret in ((f"/v1/shards/{sid}?{form}", b"x" * 32),   # bad signature
                                (f"/v1/shards/{missing}?{form}", None),     # no such shard
                                (f"/v1/shards/abc?{form}", None),           # malformed id
                                (f"/v1/shards/{bad_sid}?{form}", None)):    # corrupt
            await conn.send(get_request(node, path_qs, secret=secret))
            status, headers, doc = await conn.answer_with_headers()
            assert headers["content-type"] == "application/json; charset=utf-8"
            got.append((status, json.loads(doc)))
        answers.append(got)
    assert answers[0] == [(s, d if s != 409 else {**d, "message": d["message"].replace(
        bad[1][0], bad[0][0])}) for s, d in answers[1]]
    assert [(s, d["error"]) for s, d in answers[0]] == [
        (401, "unauthorized"), (404, "not_found"), (400, "invalid_shard_id"), (409, "corrupt")]
    assert answers[0][0][1]["message"] == "bad signature"
    assert not shard_path(node, bad[0][0]).exists() and not shard_path(node, bad[1][0]).exists()
    for path, fronts in ((f"/v1/shards/{sid}", ["lean", None]),
                         (f"/v1/shards/{missing}", ["lean", None]),
                         (f"/v1/shards/{bad[0][0]}", ["lean"]),
                         (f"/v1/shards/{bad[1][0]}", [None])):
        assert [r.get("front") for r in log_lines(node, path) if r["op"] == "get"] == fronts


async def test_a_replayed_get_is_refused(node: Node, conn: Conn) -> None:
    sid, body = await stored(node, conn, index=0, frames=1, block_size=4096, last=None)
    wire = get_request(node, f"/v1/shards/{sid}?first=0&count=1")
    await conn.send(wire)
    assert (await conn.answer_with_headers())[::2] == (200, body)
    await conn.send(wire)
    status, _, doc = await conn.answer_with_headers()
    assert (status, json.loads(doc)["message"]) == (401, "replayed request")
    recs = [r for r in await wait_lines(node, f"/v1/shards/{sid}", 3) if r["op"] == "get"]
    assert [(r["front"], r["status"]) for r in recs] == [("lean", 200), ("lean", 401)]


async def test_later_frames_and_other_queries_go_to_aiohttp(node: Node, conn: Conn) -> None:
    sid, body = await stored(node, conn, index=5, frames=3, block_size=4096, last=None)
    h = make_shard()[1]
    frame1 = body[h.frame_offset(1):h.frame_offset(2)]
    await conn.send(get_request(node, f"/v1/shards/{sid}?first=1&count=1") +
                    get_request(node, f"/v1/shards/{sid}?first=0&count=1&x=1") +
                    get_request(node, f"/v1/shards/{sid}"))  # the connection is aiohttp's now
    status, _, got = await conn.answer_with_headers()
    assert status == 200 and got[HEADER_BYTES:] == frame1
    assert got[:HEADER_BYTES] == body[:HEADER_BYTES]
    assert (await conn.answer_with_headers())[0] == 200
    assert (await conn.answer_with_headers())[::2] == (200, body)
    recs = [r for r in await wait_lines(node, f"/v1/shards/{sid}", 4) if r["op"] == "get"]
    assert [r.get("front") for r in recs] == [None, None, None]


async def test_pipelined_requests_are_answered_in_order(node: Node, conn: Conn) -> None:
    sid, body = await stored(node, conn, index=0, frames=2, block_size=200_000, last=None)
    sid2, _, _, body2 = make_shard(index=1, frames=1, block_size=4096, last=None)
    await conn.send(get_request(node, f"/v1/shards/{sid}") + put_request(node, sid2, body2)
                    + get_request(node, f"/v1/shards/{sid2}?first=0&count=1")
                    + get_request(node, f"/v1/shards/{sid}?first=0&count=2", close=True))
    assert (await conn.answer_with_headers())[::2] == (200, body)
    assert (await conn.answer_with_headers())[0] == 201
    assert (await conn.answer_with_headers())[::2] == (200, body2)
    status, headers, got = await conn.answer_with_headers()
    assert (status, got, headers["connection"]) == (200, body, "close")
    assert await asyncio.wait_for(conn.reader.read(), 30) == b""  # closed after it
    recs = [r for r in await wait_lines(node, f"/v1/shards/{sid}", 3) if r["op"] == "get"]
    assert [r["front"] for r in recs] == ["lean", "lean"]


async def test_a_later_frame_failing_its_check_cuts_the_body_short(node: Node) -> None:
    reader, writer = await asyncio.open_connection(node.host, node.port)
    conn = Conn(reader, writer)  # (the 10 MiB PUT is aiohttp's, and so is its connection)
    sid, body = await stored(node, conn, index=0, frames=40, block_size=262144, last=None)
    writer.close()
    reader, writer = await asyncio.open_connection(node.host, node.port)
    conn = Conn(reader, writer)
    h = make_shard(block_size=262144)[1]
    path = shard_path(node, sid)
    raw = bytearray(path.read_bytes())
    raw[h.frame_offset(36) + FRAME_HEAD_BYTES + 9] ^= 1  # past the first 8 MiB window
    path.write_bytes(bytes(raw))
    await conn.send(get_request(node, f"/v1/shards/{sid}?first=0&count=40"))
    head = await asyncio.wait_for(conn.reader.readuntil(b"\r\n\r\n"), 30)
    assert head.startswith(b"HTTP/1.1 200 ") and f"{len(body)}".encode() in head
    got = await asyncio.wait_for(conn.reader.read(-1), 30)  # until the node hangs up
    assert h.frame_offset(1) <= len(got) <= h.frame_offset(36) and got == body[:len(got)]
    writer.close()
    assert not path.exists()
    recs = [r for r in await wait_lines(node, f"/v1/shards/{sid}", 2) if r["op"] == "get"]
    assert [(r["front"], r["status"], r["truncated"]) for r in recs] == [("lean", 200, True)]


async def test_a_reader_that_checks_frames_gets_them_unchecked(node: Node, conn: Conn) -> None:
    """With `X-Tessera-Reader-Checks` (signed), both fronts send a corrupt frame as it is:
    the reader checks it; the node neither cuts the body nor quarantines the shard. The
    same read without the header is still checked (409, quarantined)."""
    h = make_shard(block_size=65536)[1]
    sid, body = await stored(node, conn, index=2, frames=4, block_size=65536, last=None)
    path = shard_path(node, sid)
    raw = bytearray(path.read_bytes())
    raw[h.frame_offset(0) + FRAME_HEAD_BYTES + 5] ^= 1
    path.write_bytes(bytes(raw))
    for path_qs in (f"/v1/shards/{sid}?first=0&count=4",  # the lean front's
                    f"/v1/shards/{sid}?count=4&first=0"):  # aiohttp's
        await conn.send(get_request(node, path_qs, reader_checks=True))
        assert (await conn.answer_with_headers())[::2] == (200, bytes(raw))
    assert path.exists()
    await conn.send(get_request(node, f"/v1/shards/{sid}?first=0&count=4"))
    assert (await conn.answer_with_headers())[0] == 409
    assert not path.exists()
    recs = [r for r in await wait_lines(node, f"/v1/shards/{sid}", 4) if r["op"] == "get"]
    assert [(r.get("front"), r["status"]) for r in recs] == [
        ("lean", 200), (None, 200), (None, 409)]  # (the connection is aiohttp's now)
