"""Large S3 bodies received straight into pooled blocks (`gateway/s3/bodyrecv.py`): exactly
the announced bytes become the object, a block is never refilled while anything still holds
it, the connection carries the next request once the body is in (and closes after the
answer if it is not), and a client that stops or hangs up mid-body gets nothing
acknowledged while the gateway keeps serving. The real gateway over in-memory
nodes; the direct threshold and block size scaled down (256 KiB, 64 KiB) to stay quick."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import select
import socket
import threading
import time
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import botocore.auth
import pytest
import urllib3.util.connection
from aiohttp import web_protocol
from botocore.awsrequest import AWSRequest

import gateway.s3.body as body_mod
import gateway.s3.server as server_mod
from gateway.s3 import bodyrecv
from storage import stripes
from storage.buffers import LendingPool, Lent
from storage.testing.simnodes import SimNodes
from tests.inproc import sim_config, sim_s3

BUCKET = "direct"
BLOCK = 64 * 1024


@pytest.fixture
def nodes(tmp_path: Path) -> SimNodes:
    return SimNodes(list(sim_config(tmp_path, 1024).nodes))


@pytest.fixture
async def s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
             nodes: SimNodes) -> AsyncIterator[Any]:
    monkeypatch.setattr(bodyrecv, "DIRECT_BODY_BYTES", 256 * 1024)
    monkeypatch.setattr(bodyrecv, "POOL", LendingPool(BLOCK, keep=6))
    async with sim_s3(tmp_path, sim_config(tmp_path, 1024), nodes, BUCKET) as client:
        yield client


def _body(seed: str, n: int) -> bytes:
    return hashlib.shake_256(seed.encode()).digest(n)


async def _get(s3: Any, key: str) -> bytes:
    return await asyncio.to_thread(
        lambda: s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())  # type: ignore[no-any-return]


async def test_large_bodies_arrive_exactly_through_reused_blocks(s3: Any) -> None:
    """Four concurrent PUTs through a pool of six 64 KiB blocks: blocks are reused many
    times over, and every object is its own bytes (a block refilled while a segment, the
    MD5 thread or the coder still held it would mix them)."""
    bodies = {f"k{i}": _body(f"b{i}", 1024 * 1024 + 4099 * i + 1) for i in range(4)}
    taken = 0
    take = bodyrecv.POOL.take

    def counting() -> Lent:
        nonlocal taken
        taken += 1
        return take()

    bodyrecv.POOL.take = counting  # type: ignore[method-assign]
    puts = await asyncio.gather(*(asyncio.to_thread(s3.put_object, Bucket=BUCKET, Key=k,
                                                    Body=b) for k, b in bodies.items()))
    assert taken >= 4 * 9  # most of each body went through the blocks (aiohttp buffers
    # at most ~384 KiB of one before the handler reads)
    assert bodyrecv.POOL.kept == 6  # ... and no more than the pool keeps were made for it
    for (k, b), put in zip(bodies.items(), puts, strict=True):
        assert put["ETag"] == f'"{hashlib.md5(b).hexdigest()}"'
        assert put["ResponseMetadata"]["HTTPHeaders"].get("connection") != "close"
        assert await _get(s3, k) == b


async def test_a_checksum_of_a_direct_body_is_checked(s3: Any) -> None:
    b = _body("crc", 300 * 1024 + 5)
    put = await asyncio.to_thread(s3.put_object, Bucket=BUCKET, Key="crc", Body=b,
                                  ChecksumAlgorithm="CRC32")
    assert put["ResponseMetadata"]["HTTPHeaders"].get("connection") != "close"
    assert await _get(s3, "crc") == b


def _raw_put(s3: Any, key: str, sent: bytes, extra: bytes, md5: str | None = None,
             length: int | None = None, hang_up: bool = False, gap: float = 0.0,
             piece: int = 8192) -> bytes:
    """PUT `sent` (then `extra`) to a presigned URL over one socket announcing `length`
    (default len(sent)) bytes; hang up after sending when `hang_up`; with `gap`, in
    `piece`-byte sends `gap` seconds apart. Returns what the gateway answered (`_exchange`)."""
    params = {"Bucket": BUCKET, "Key": key} | ({"ContentMD5": md5} if md5 else {})
    url = s3.generate_presigned_url("put_object", Params=params, ExpiresIn=300)
    u = urlsplit(url)
    n = len(sent) if length is None else length
    head = [f"PUT {u.path}?{u.query} HTTP/1.1", f"Host: {u.netloc}", f"Content-Length: {n}"]
    head += [f"Content-MD5: {md5}"] if md5 else []
    return _exchange(u.netloc, head, sent + extra, hang_up, gap, piece)


def _exchange(netloc: str, head: list[str], body: bytes, hang_up: bool = False,
              gap: float = 0.0, piece: int = 8192) -> bytes:
    """Send `head` with `Expect: 100-continue` and, once the gateway answered it (so the
    body is read past aiohttp: it has none of it buffered), all of `body` before reading
    (or hang up), in `piece`-byte sends `gap` seconds apart if `gap`. Returns the answer
    after the 100: to its end if the connection stays open, else until the gateway closed
    it (a reset raises ConnectionResetError)."""
    host, port = netloc.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(("\r\n".join([*head, "Expect: 100-continue"]) + "\r\n\r\n").encode())
        got = b""
        while b"\r\n\r\n" not in got:
            got += sock.recv(1024)
        assert got.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), got
        got = got[len(b"HTTP/1.1 100 Continue\r\n\r\n"):]
        if gap:
            for i in range(0, len(body), piece):
                sock.sendall(body[i:i + piece])
                time.sleep(gap)
        else:
            sock.sendall(body)
        if hang_up:
            return b""
        while b"\r\n\r\n" not in got:
            got += sock.recv(65536)
        head = got.split(b"\r\n\r\n", 1)[0].lower()
        if b"connection: close" in head:
            while chunk := sock.recv(65536):
                got += chunk
            return got
        n = int(head.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
        while len(got) < len(head) + 4 + n:
            got += sock.recv(65536)
        return got


class _Conn:
    """One keep-alive connection to the gateway: requests written as given, answers read
    one at a time (status line, headers, a Content-Length body)."""

    def __init__(self, netloc: str) -> None:
        host, port = netloc.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        self._buf = b""

    def request(self, method: str, url: str, body: bytes = b"",
                headers: dict[str, str] | None = None) -> bytes:
        """The request's bytes (not sent), its length announced by Content-Length."""
        u = urlsplit(url)
        head = [f"{method} {u.path}?{u.query} HTTP/1.1", f"Host: {u.netloc}",
                f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        return ("\r\n".join(head) + "\r\n\r\n").encode() + body

    def answer(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self._buf:
            self._recv()
        head, self._buf = self._buf.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
        n = int(headers.get("content-length", "0"))
        while len(self._buf) < n:
            self._recv()
        body, self._buf = self._buf[:n], self._buf[n:]
        return int(lines[0].split()[1]), headers, body

    def closed(self) -> bool:
        """Whether the gateway closed the connection (EOF, nothing more sent)."""
        return self.sock.recv(1) == b""

    def _recv(self) -> None:
        got = self.sock.recv(1 << 20)
        assert got, "the gateway closed the connection"
        self._buf += got


def _url(s3: Any, op: str, **params: Any) -> str:
    return s3.generate_presigned_url(op, Params={"Bucket": BUCKET, **params}, ExpiresIn=300)


def _md5(b: bytes) -> str:
    return base64.b64encode(hashlib.md5(b).digest()).decode()


def _puts_over_one_connection(s3: Any, bodies: dict[str, bytes], upload: str) -> None:
    """On one connection: two large PUTs, a large one whose Content-MD5 is wrong between
    them, two large parts of `upload`, then a large PUT with a GET pipelined right behind
    its body (one send), then a GET of every object; each answered on that connection."""
    c = _Conn(urlsplit(s3.meta.endpoint_url).netloc)
    with c.sock:
        for key in ("a", "b"):
            c.sock.sendall(c.request("PUT", _url(s3, "put_object", Key=key), bodies[key]))
            status, h, _ = c.answer()
            assert status == 200 and h.get("connection") != "close", (key, status, h)
            assert h["etag"] == f'"{hashlib.md5(bodies[key]).hexdigest()}"'
            if key == "a":
                bad = bodies["a"][::-1]
                c.sock.sendall(c.request("PUT", _url(s3, "put_object", Key="bad",
                                                     ContentMD5=_md5(bodies["a"])),
                                         bad, {"Content-MD5": _md5(bodies["a"])}))
                status, h, text = c.answer()
                assert status == 400 and b"<Code>BadDigest</Code>" in text, text
                assert h.get("connection") != "close"
        for n in (1, 2):
            part = bodies[f"p{n}"]
            c.sock.sendall(c.request("PUT", _url(s3, "upload_part", Key="mp", UploadId=upload,
                                                 PartNumber=n), part))
            status, h, _ = c.answer()
            assert status == 200 and h["etag"] == f'"{hashlib.md5(part).hexdigest()}"'
        c.sock.sendall(c.request("PUT", _url(s3, "put_object", Key="c"), bodies["c"])
                       + c.request("GET", _url(s3, "get_object", Key="a")))
        status, h, _ = c.answer()
        assert status == 200 and h.get("connection") != "close"
        status, _, got = c.answer()
        assert status == 200 and got == bodies["a"]  # the pipelined GET, parsed as one
        for key in ("b", "c"):
            c.sock.sendall(c.request("GET", _url(s3, "get_object", Key=key)))
            status, _, got = c.answer()
            assert status == 200 and got == bodies[key]


async def test_large_puts_and_parts_keep_the_connection(s3: Any) -> None:
    """Large PUTs and UploadParts (received past aiohttp's parser) leave the connection
    reusable: every request after them, one refused for a bad digest among them and one
    pipelined right behind a body, is answered on the same connection."""
    bodies = {k: _body(k, 1024 * 1024 + 7 * i + 3) for i, k in enumerate(("a", "b", "c"))}
    bodies |= {f"p{n}": _body(f"p{n}", 5 * 1024 * 1024 + n) for n in (1, 2)}
    up = (await asyncio.to_thread(s3.create_multipart_upload, Bucket=BUCKET, Key="mp"))["UploadId"]
    await asyncio.to_thread(_puts_over_one_connection, s3, bodies, up)
    parts = await asyncio.to_thread(s3.list_parts, Bucket=BUCKET, Key="mp", UploadId=up)
    await asyncio.to_thread(s3.complete_multipart_upload, Bucket=BUCKET, Key="mp", UploadId=up,
                            MultipartUpload={"Parts": [{"PartNumber": p["PartNumber"],
                                                        "ETag": p["ETag"]}
                                                       for p in parts["Parts"]]})
    assert await _get(s3, "mp") == bodies["p1"] + bodies["p2"]
    keys = await asyncio.to_thread(s3.list_objects_v2, Bucket=BUCKET)
    assert [o["Key"] for o in keys["Contents"]] == ["a", "b", "c", "mp"]


async def test_boto3_uploads_parts_over_one_connection(
        s3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """boto3 (urllib3) sends a multipart upload's large parts, and then a large PUT, over
    the one TCP connection it opened (counted where urllib3 connects): none of them is
    answered `Connection: close`, so none makes it connect again."""
    connects = 0
    connect = urllib3.util.connection.create_connection

    def counting(*args: Any, **kwargs: Any) -> socket.socket:
        nonlocal connects
        connects += 1
        return connect(*args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", counting)
    parts = [_body(f"part{n}", (5 if n < 2 else 1) * 1024 * 1024 + n) for n in range(3)]

    def upload() -> int:
        up = s3.create_multipart_upload(Bucket=BUCKET, Key="sdk")["UploadId"]
        done = [{"PartNumber": n + 1, "ETag": s3.upload_part(
            Bucket=BUCKET, Key="sdk", UploadId=up, PartNumber=n + 1, Body=p)["ETag"]}
            for n, p in enumerate(parts)]
        s3.complete_multipart_upload(Bucket=BUCKET, Key="sdk", UploadId=up,
                                     MultipartUpload={"Parts": done})
        s3.put_object(Bucket=BUCKET, Key="whole", Body=parts[0])
        return connects

    assert await asyncio.to_thread(upload) == 1
    assert await _get(s3, "sdk") == b"".join(parts)


async def test_without_a_fresh_parser_the_connection_closes_after_the_answer(
        s3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """If this aiohttp's handler cannot be given a fresh parser (its internals changed),
    a large PUT still succeeds and its connection closes after the answer, as before."""
    def changed(*args: Any, **kwargs: Any) -> Any:
        raise TypeError("unexpected keyword argument")

    monkeypatch.setattr(bodyrecv, "HttpRequestParser", changed)
    b = _body("no-parser", 1024 * 1024 + 1)

    def put() -> tuple[int, dict[str, str], bytes, bool]:
        c = _Conn(urlsplit(s3.meta.endpoint_url).netloc)
        with c.sock:
            c.sock.sendall(c.request("PUT", _url(s3, "put_object", Key="np"), b))
            return (*c.answer(), c.closed())

    status, h, _, closed = await asyncio.to_thread(put)
    assert status == 200 and h.get("connection") == "close" and closed
    assert await _get(s3, "np") == b


async def test_a_body_given_up_mid_way_ends_the_connection(s3: Any, nodes: SimNodes) -> None:
    """A body the gateway stops reading (its first 4 MiB segment found too few nodes up)
    is not whole on the connection: the answer, sent while the client still sends, says
    `Connection: close`, and the connection closes cleanly after it once the rest of the
    body was read and dropped."""
    nodes.down = {f"n{i}" for i in range(1, 8)}
    b = _body("given-up", 32 * 1024 * 1024)

    def put() -> tuple[int, dict[str, str], bytes, bool]:
        c = _Conn(urlsplit(s3.meta.endpoint_url).netloc)
        with c.sock:
            wire = c.request("PUT", _url(s3, "put_object", Key="gone"), b)
            c.sock.sendall(wire[:24 * 1024 * 1024])  # the answer comes before the rest
            answer = c.answer()
            c.sock.sendall(wire[24 * 1024 * 1024:])
            return (*answer, c.closed())

    status, h, text, closed = await asyncio.to_thread(put)
    assert status == 503, (status, text)
    assert h.get("connection") == "close" and closed
    nodes.down = set()
    keys = await asyncio.to_thread(s3.list_objects_v2, Bucket=BUCKET)
    assert keys.get("Contents", []) == []


async def test_a_client_gone_mid_body_leaves_nothing(s3: Any) -> None:
    b = _body("gone", 1024 * 1024)
    await asyncio.to_thread(_raw_put, s3, "gone", b[:300 * 1024], b"", None, len(b), True)
    # served on: a later PUT of the same key through the same path is whole
    await asyncio.to_thread(s3.put_object, Bucket=BUCKET, Key="after", Body=b)
    assert await _get(s3, "after") == b
    keys = await asyncio.to_thread(s3.list_objects_v2, Bucket=BUCKET)
    assert [o["Key"] for o in keys.get("Contents", [])] == ["after"]


async def test_a_client_stalled_mid_body_gets_request_timeout(
        s3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(body_mod, "BODY_IDLE_TIMEOUT_S", 0.5)
    b = _body("stall", 1024 * 1024)
    answer = await asyncio.to_thread(_raw_put, s3, "stall", b[:400 * 1024], b"", None, len(b))
    assert answer.startswith(b"HTTP/1.1 400") and b"<Code>RequestTimeout</Code>" in answer
    keys = await asyncio.to_thread(s3.list_objects_v2, Bucket=BUCKET)
    assert keys.get("Contents", []) == []


async def test_a_slow_but_steady_client_is_not_timed_out(
        s3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The idle limit is a limit on silence, not on speed: 16 KiB every 0.1 s fills a
    256 KiB block in 1.6 s, well past the 0.6 s limit, and never pauses that long."""
    monkeypatch.setattr(body_mod, "BODY_IDLE_TIMEOUT_S", 0.6)
    monkeypatch.setattr(bodyrecv, "POOL", LendingPool(256 * 1024, keep=4))
    b = _body("slow", 260 * 1024)
    answer = await asyncio.to_thread(_raw_put, s3, "slow", b, b"", gap=0.1, piece=16384)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert await _get(s3, "slow") == b


class _Streaming(botocore.auth.S3SigV4Auth):
    """botocore's signer for an aws-chunked body with unsigned chunks."""

    def payload(self, request: Any) -> str:
        return "STREAMING-UNSIGNED-PAYLOAD-TRAILER"


async def test_an_error_mid_body_is_answered_after_the_body_not_reset(s3: Any) -> None:
    """A client that sends all of its body before it reads (as urllib3 does) gets the S3
    error and a clean close: the gateway, which gave up at the second chunk, read and
    dropped the rest of the body, still coming for 0.3 s, instead of closing on it (a
    TCP reset, which can lose the answer); the given-up body ended at once, not at GC."""
    data = _body("bad-chunk", 2 * 1024 * 1024)
    wire = f"{BLOCK:x}\r\n".encode() + data[:BLOCK] + b"\r\nzz\r\n" + data[BLOCK:]
    netloc, head = _chunked_head(s3, "chunky", len(wire), len(data))
    answer = await asyncio.to_thread(_exchange, netloc, head, wire, False, 0.01, BLOCK)
    assert answer.startswith(b"HTTP/1.1 400") and b"<Code>InvalidRequest</Code>" in answer, \
        answer[:400]
    assert bodyrecv.QUIET.active == 0
    keys = await asyncio.to_thread(s3.list_objects_v2, Bucket=BUCKET)
    assert keys.get("Contents", []) == []


async def test_an_aws_chunked_body_is_held_in_its_blocks_uncopied(
        s3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """An aws-chunked body (what boto3 sends with a checksum) received directly reaches the
    segments as views of the receive blocks between the chunk framing, not as copies, and
    its trailer checksum is still checked: the object is its bytes, a wrong CRC refused."""
    held: dict[type, int] = {}
    cut = stripes._segments

    async def watching(source: Any, size: int) -> AsyncIterator[Any]:
        async for data, last in cut(source, size):
            for p in data:
                base = type(p.obj) if type(p) is memoryview else type(p)
                held[base] = held.get(base, 0) + len(p)
            yield data, last

    monkeypatch.setattr(stripes, "_segments", watching)
    data = _body("chunky", 3 * 1024 * 1024 + 5)
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    answer = await asyncio.to_thread(_chunked_put, s3, "chunky", data, crc)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:400]
    assert await _get(s3, "chunky") == data
    assert held.get(Lent, 0) >= len(data) - 512 * 1024, held  # all but what aiohttp had
    bad = await asyncio.to_thread(_chunked_put, s3, "wrong", data, "AAAAAA==")
    assert bad.startswith(b"HTTP/1.1 400") and b"<Code>BadDigest</Code>" in bad, bad[:400]


def _chunked_head(s3: Any, key: str, length: int, decoded: int,
                  extra: tuple[str, ...] = ()) -> tuple[str, list[str]]:
    """The address and signed head lines of a PUT of an unsigned aws-chunked body of
    `length` bytes on the wire and `decoded` payload bytes with a CRC32 trailer (`extra`:
    more header lines, after Content-Length)."""
    url = f"{s3.meta.endpoint_url}/{BUCKET}/{key}"
    req = AWSRequest(method="PUT", url=url, headers={
        "Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": str(decoded),
        "x-amz-trailer": "x-amz-checksum-crc32",
        "X-Amz-Content-SHA256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER"})
    _Streaming(s3._request_signer._credentials, "s3", s3.meta.region_name).add_auth(req)
    netloc = urlsplit(url).netloc
    head = [f"PUT /{BUCKET}/{key} HTTP/1.1", f"Host: {netloc}", f"Content-Length: {length}",
            *extra]
    return netloc, head + [f"{k}: {v}" for k, v in req.headers.items()]


def _chunked_put(s3: Any, key: str, data: bytes, crc: str) -> bytes:
    """PUT `data` as an unsigned aws-chunked body (64 KiB chunks, a CRC32 trailer)."""
    wire = b"".join(f"{len(c):x}\r\n".encode() + c + b"\r\n"
                    for c in (data[i:i + BLOCK] for i in range(0, len(data), BLOCK)))
    wire += f"0\r\nx-amz-checksum-crc32:{crc}\r\n\r\n".encode()
    return _exchange(*_chunked_head(s3, key, len(wire), len(data)), wire)


def test_a_block_is_lent_again_only_once_nothing_holds_it() -> None:
    pool = LendingPool(16, keep=2)
    a = pool.take()
    first = id(a)
    view = memoryview(a)[3:9]
    held = [pool.take()]  # a list holding the second block
    extra = pool.take()  # both held: a third, made beyond `keep` and not kept
    assert extra is not a and extra is not held[0] and pool.kept == 2
    del a, extra
    assert id(pool.take()) != first  # the view still holds the first block
    view.release()
    del view
    again = pool.take()
    assert id(again) == first and type(again) is Lent and pool.kept == 2
    done = threading.Event()
    seen: list[int] = []

    def reader(block: Lent) -> None:  # a thread still reading a block holds it
        done.wait(10)
        seen.append(len(block))

    second = id(held[0])
    t = threading.Thread(target=reader, args=(held.pop(),))
    t.start()
    assert id(pool.take()) not in (first, second)  # one in `again`, one in the thread
    del again
    assert id(pool.take()) == first  # nothing holds it now: lent again
    done.set()
    t.join()
    assert seen == [16]
    assert id(pool.take()) == first  # both idle: the first kept block comes first


def test_trim_lets_go_of_idle_blocks_only() -> None:
    pool = LendingPool(16, keep=3)
    lent = pool.take()
    for b in [pool.take(), pool.take()]:  # two more made and kept, then idle
        del b
    assert pool.kept == 3
    pool.trim()
    assert pool.kept == 1 and pool.take() is not lent  # only the lent one is still kept


# The good chunk before the bad header. Direct: more than aiohttp can hold before the
# handler takes the body over (its stream pauses reading past 2 x 64 KiB, plus one socket
# read of up to 256 KiB), so the bad header can only come through `bodyrecv.DirectBody`.
# Buffered: one small send with the head (the smallest chunk aws-chunked allows but the
# last), so it all arrives with the head, before the handler runs.
GOOD_CHUNK = {True: 1 << 20, False: 8192}


def _drop_rest_spy(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each call of `drop_rest` (an error found in what aiohttp buffered) took a
    rest to drop: tells which path found the error."""
    used: list[bool] = []
    real = body_mod.drop_rest

    def spy(request: Any, transport: Any) -> Any:
        dropping = real(request, transport)
        used.append(dropping is not None)
        return dropping

    monkeypatch.setattr(body_mod, "drop_rest", spy)
    return used


def _slow_bad_chunked(s3: Any, announced: int, piece: int, gap: float, give_up_s: float,
                      direct: bool) -> tuple[bytes, int, bool, float]:
    """A client that announces `announced` bytes of aws-chunked body and sends one good
    chunk and a bad chunk header (`direct`: once answered 100 Continue, after a good chunk
    too big for aiohttp's buffer, so received directly, `bodyrecv.DirectBody`; else with
    the head, so aiohttp has it buffered when the handler gives up), then `piece` bytes
    every `gap` seconds (reading whatever the gateway answers meanwhile) until the gateway
    closes the connection or `give_up_s` passed. Returns (what it answered, bytes sent,
    whether the gateway cut it off, seconds from the bad header to the cut)."""
    good = GOOD_CHUNK[direct]
    wire = f"{good:x}\r\n".encode() + _body("slow-bad", good) + b"\r\nzz\r\n"
    netloc, head = _chunked_head(s3, "dripping", announced, announced,
                                 ("Expect: 100-continue",) if direct else ())
    host, port = netloc.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        got = b""
        if direct:
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
            while b"\r\n\r\n" not in got:
                got += sock.recv(1024)
            assert got.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), got
            got = got[len(b"HTTP/1.1 100 Continue\r\n\r\n"):]
            sock.sendall(wire)
        else:
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + wire)
        sent, bad_at = len(wire), time.monotonic()
        sock.setblocking(False)
        filler = b"\0" * piece
        while time.monotonic() < bad_at + give_up_s and sent + piece < announced:
            try:
                while chunk := sock.recv(65536):
                    got += chunk
                return got, sent, True, time.monotonic() - bad_at  # EOF: closed
            except BlockingIOError:
                pass
            except ConnectionResetError:
                return got, sent, True, time.monotonic() - bad_at
            try:
                sent += sock.send(filler)
            except BlockingIOError:
                pass  # its receive window is full: not reading, so not draining
            except (BrokenPipeError, ConnectionResetError):
                return got, sent, True, time.monotonic() - bad_at
            time.sleep(gap)  # the client's pace (a slow sender is the case under test)
    return got, sent, False, time.monotonic() - bad_at


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "buffered"])
async def test_a_body_given_up_is_dropped_for_drain_s_at_most(
        s3: Any, monkeypatch: pytest.MonkeyPatch, direct: bool) -> None:
    """After an error mid-body the gateway reads and drops the rest (so the client sees the
    answer, not a reset) for DRAIN_S at most: a client that keeps sending slowly past that
    is cut off, however much of its announced body is left, whether the error was in what
    aiohttp had buffered or in what was received directly. With DRAIN_S at 0.5 s, a client
    dripping 16 KiB every 20 ms of a 512 MiB body (about 10 minutes of it) must be cut off
    within 8 s: aiohttp's own linger (10 s, any number of bytes) or an unbounded drain
    fails this."""
    monkeypatch.setattr(bodyrecv, "DRAIN_S", 0.5)
    monkeypatch.setattr(bodyrecv, "DRAIN_BYTES", 1 << 40)  # the time bound alone acts
    dropped = _drop_rest_spy(monkeypatch)
    answer, sent, cut, took = await asyncio.to_thread(_slow_bad_chunked, s3, 512 << 20,
                                                      16384, 0.02, 8.0, direct)
    assert any(dropped) != direct, f"the error was not found on the {'direct' if direct else 'buffered'} path"
    assert cut, f"still draining after {took:.0f} s, {sent} bytes sent"
    if answer:  # read before the close (a reset may discard what the client had not read)
        assert answer.startswith(b"HTTP/1.1 400") and b"<Code>InvalidRequest</Code>" in answer
    assert bodyrecv.QUIET.active == 0
    keys = await asyncio.to_thread(s3.list_objects_v2, Bucket=BUCKET)
    assert keys.get("Contents", []) == []


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "buffered"])
async def test_a_body_with_more_than_drain_bytes_left_is_not_drained(
        s3: Any, monkeypatch: pytest.MonkeyPatch, direct: bool) -> None:
    """Past DRAIN_BYTES left, a given-up body is not read on at all: the connection closes
    at once (DRAIN_S is made 30 s here, so only the byte bound can cut it off within 8 s)."""
    monkeypatch.setattr(bodyrecv, "DRAIN_S", 30.0)
    monkeypatch.setattr(bodyrecv, "DRAIN_BYTES", 1 << 20)
    dropped = _drop_rest_spy(monkeypatch)
    _, sent, cut, took = await asyncio.to_thread(_slow_bad_chunked, s3, 512 << 20, 16384,
                                                 0.02, 8.0, direct)
    assert any(dropped) != direct, f"the error was not found on the {'direct' if direct else 'buffered'} path"
    assert cut, f"still draining after {took:.0f} s, {sent} bytes sent"
    assert bodyrecv.QUIET.active == 0


async def test_a_given_up_body_sent_whole_still_closes_the_connection(
        s3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A body the handler gave up on (a bad chunk header, received directly) that the
    client then sends whole is drained to its end, yet the answer carries Connection: close
    and the connection ends: the request failed mid-body, so what follows on the wire is
    not trusted as the next request. The drain reaching the body's end must not hand the
    connection back to aiohttp's parser for reuse."""
    monkeypatch.setattr(bodyrecv, "DRAIN_S", 60.0)  # only the body's end stops the drain
    run = server_mod.S3Server._run
    drained: list[bool] = []

    async def answer_once_drained(self: Any, flow: Any) -> Any:
        """The failed handler's answer is made once the drain reached the body's end (else
        the answer may win the race and test nothing)."""
        try:
            return await run(self, flow)
        except Exception:
            direct = flow.request.get(server_mod.BODY_TAKEN)
            deadline = time.monotonic() + 20
            while direct is not None and direct.installed and time.monotonic() < deadline:
                await asyncio.sleep(0.01)  # a condition wait: the drain ends on its own
            drained.append(direct is not None and not direct.installed)
            raise

    monkeypatch.setattr(server_mod.S3Server, "_run", answer_once_drained)
    good = GOOD_CHUNK[True]
    wire = f"{good:x}\r\n".encode() + _body("given-up", good) + b"\r\nzz\r\n"
    announced = len(wire) + 512 * 1024
    netloc, head = _chunked_head(s3, "given-up", announced, announced,
                                 ("Expect: 100-continue",))
    host, port = netloc.rsplit(":", 1)

    def client() -> bytes:
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
            got = b""
            while b"\r\n\r\n" not in got:
                got += sock.recv(1024)
            assert got.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), got
            sock.sendall(wire + b"\0" * (announced - len(wire)))  # the whole body
            answer = b""
            while chunk := sock.recv(65536):  # to EOF: the gateway must close
                answer += chunk
            return answer

    answer = await asyncio.to_thread(client)
    status_line, _, rest = answer.partition(b"\r\n")
    headers = rest.partition(b"\r\n\r\n")[0].lower()
    assert status_line.startswith(b"HTTP/1.1 400"), answer[:300]
    assert b"<Code>InvalidRequest</Code>" in answer
    assert drained == [True]
    assert b"connection: close" in headers.split(b"\r\n"), headers
    assert bodyrecv.QUIET.active == 0


def _bad_transfer_chunked(s3: Any, piece: int, gap: float, give_up_s: float,
                          give_up_bytes: int) -> tuple[bytes, int, bool]:
    """A body sent in HTTP chunked transfer encoding (no Content-Length): a good aws-chunked
    chunk and a bad chunk header in the first HTTP chunk, then HTTP chunks of `piece` zero
    bytes, one every `gap` seconds (0: as fast as the socket takes them), until the gateway
    closes the connection or `give_up_bytes` were sent or `give_up_s` passed.
    Returns (answer, bytes sent, cut: the gateway closed it)."""
    good = GOOD_CHUNK[False]
    inner = f"{good:x}\r\n".encode() + _body("slow-te", good) + b"\r\nzz\r\n"
    wire = f"{len(inner):x}\r\n".encode() + inner + b"\r\n"
    netloc, head = _chunked_head(s3, "dripping-te", 0, 512 << 20)
    head = [line for line in head if not line.startswith("Content-Length:")]
    head.append("Transfer-Encoding: chunked")
    host, port = netloc.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + wire)
        sent, end, got = len(wire), time.monotonic() + give_up_s, b""
        sock.setblocking(False)
        filler = memoryview(f"{piece:x}\r\n".encode() + b"\0" * piece + b"\r\n")
        pending = filler[:0]  # the rest of an HTTP chunk partly sent (its framing kept)
        while sent < give_up_bytes and time.monotonic() < end:
            readable, writable, _ = select.select([sock], [sock], [], 1.0)
            try:
                if readable:
                    while chunk := sock.recv(65536):
                        got += chunk
                    return got, sent, True  # EOF: closed
                if writable:
                    if not pending:
                        if gap:
                            time.sleep(gap)  # the client's pace (a slow sender is the case)
                        pending = filler
                    n = sock.send(pending)
                    pending, sent = pending[n:], sent + n
            except (BlockingIOError, InterruptedError):
                pass
            except (BrokenPipeError, ConnectionResetError):
                return got, sent, True
    return got, sent, False


def _unbounded_linger(monkeypatch: pytest.MonkeyPatch) -> None:
    """aiohttp's own linger (10 s of reading a body the handler left) made unbounded, so
    that only the gateway's bounds can cut a body: the test then needs no race between
    those bounds and aiohttp's 10 s (the old code's cut) and decides by a condition."""
    init = web_protocol.RequestHandler.__init__

    def lingering_forever(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **{**kwargs, "lingering_time": 1e9})

    monkeypatch.setattr(web_protocol.RequestHandler, "__init__", lingering_forever)


@pytest.mark.parametrize(("drain_s", "drain_bytes", "piece", "gap", "give_up_s", "give_up_bytes"),
                         [(0.5, 1 << 40, 16384, 0.02, 120.0, 1 << 40),
                          (1e9, 1 << 20, 1 << 18, 0.0, 600.0, 256 << 20)],
                         ids=["time-bound", "byte-bound"])
async def test_a_transfer_chunked_body_given_up_is_dropped_within_the_bounds(
        s3: Any, monkeypatch: pytest.MonkeyPatch, drain_s: float, drain_bytes: int,
        piece: int, gap: float, give_up_s: float, give_up_bytes: int) -> None:
    """A body sent with Transfer-Encoding: chunked (no Content-Length) that the handler
    gives up on was left to aiohttp's linger: 10 s of reading, however many bytes. Now it
    is dropped within DRAIN_S and DRAIN_BYTES like a Content-Length body. aiohttp's linger
    is unbounded here, so the old code never cuts the body, and each bound alone must:
    time-bound, a client dripping 16 KiB every 20 ms is cut after DRAIN_S = 0.5 s (it
    gives up after 120 s: a 240x margin); byte-bound (DRAIN_S unbounded), a client
    sending as fast as it can is cut after DRAIN_BYTES = 1 MiB (plus what socket buffers
    hold), before it has sent 256 MiB: no clock at all."""
    monkeypatch.setattr(bodyrecv, "DRAIN_S", drain_s)
    monkeypatch.setattr(bodyrecv, "DRAIN_BYTES", drain_bytes)
    _unbounded_linger(monkeypatch)
    answer, sent, cut = await asyncio.to_thread(_bad_transfer_chunked, s3, piece, gap,
                                                give_up_s, give_up_bytes)
    assert cut, f"still draining after {sent} bytes sent"
    if answer:  # read before the close (a reset may discard what the client had not read)
        assert answer.startswith(b"HTTP/1.1 400") and b"<Code>InvalidRequest</Code>" in answer
        assert b"connection: close" in answer.partition(b"\r\n\r\n")[0].lower()
    assert bodyrecv.QUIET.active == 0
    keys = await asyncio.to_thread(s3.list_objects_v2, Bucket=BUCKET)
    assert keys.get("Contents", []) == []
