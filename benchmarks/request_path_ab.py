"""In-process A/B of the S3 request path: CPU per 4 KiB request with a mechanism on and off.

One process serves both variants over one `request_path_cpu.py` setup (the real `S3Server`,
`Cluster`, SQLite with its group commit, keys, AES-GCM; in-memory nodes, no background
work), so both see the same data, the same machine load and the same warm caches; rounds
alternate (order swapped every round) and the medians are compared. Clients are keep-alive
raw sockets in the same loop sending requests signed before the round starts, so the
process CPU per request (`time.process_time`, client included: the same in both variants)
moves only with the server's own cost. On a loaded shared box single rounds swing by 10-20%:
read the medians and how many rounds each variant won.

    python benchmarks/request_path_ab.py --toggle object-cache --op get --rounds 12

Toggles (`TOGGLES`): `object-cache` (current object records kept between reads,
`storage/metadata/sqlite.py`), `bucket-cache` (bucket records, likewise), `inline-flag` (the
stores' own `inline_apart` attribute, `storage/inline_bodies.py`), `decoded-version` (GET's
current version decoded once per record, `storage/object_reads.py`), `shared-memo` (GET's
headers and data-key cipher kept with that version, `storage/shared_memo.py`),
`request-state` (the S3 request's state lookups without a KeyError per unset key,
`gateway/app.py`), `bucket-copies` (bucket records decoded once per stored value,
`storage/buckets.py`), `small-get` (a small GET as one `Response`,
`gateway/s3/handlers/objects.py`), `small9` (those three together), `same-item` (a
re-read of an unchanged cached record hands out the same `Item`,
`storage/metadata/sqlite.py`), `none` (A/A: the noise floor).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.request_path_cpu import build  # noqa: E402
from gateway import logs  # noqa: E402
from gateway.s3.sigv4_sign import sign_headers  # noqa: E402


def _switch(store: Any, attr: str) -> Callable[[bool], None]:
    """Turn one of the SQLite store's record caches on (its counter) or off (None)."""
    gen = getattr(store, attr)

    def set_on(on: bool) -> None:
        setattr(store, attr, gen if on else None)
    return set_on


def _inline_flag(meta: Any) -> Callable[[bool], None]:
    """The stores' own `inline_apart` attributes on, or off: `inline_bodies.enabled` then
    finds none and its `getattr` default catches an AttributeError (as before they had)."""
    from storage.metadata.sqlite import SqliteStore

    def set_on(on: bool) -> None:
        if on:
            meta.inline_apart = SqliteStore.inline_apart = False
        else:
            meta.__dict__.pop("inline_apart", None)
            if "inline_apart" in vars(SqliteStore):
                del SqliteStore.inline_apart
    return set_on


def _decoded_version(meta: Any) -> Callable[[bool], None]:
    """GET/HEAD's current version decoded once per record (`ObjectReads._current_shared`),
    or decoded on every read (as before it was kept)."""
    from storage.keyspace import object_key
    from storage.object_reads import ObjectReads
    from storage.records import ObjectVersion

    shared = ObjectReads._current_shared

    async def fresh(self: Any, bucket: str, key: str) -> ObjectVersion | None:
        item = await self._meta.get(object_key(bucket, key))
        return ObjectVersion.decode(item.value) if item is not None else None

    def set_on(on: bool) -> None:
        ObjectReads._current_shared = shared if on else fresh  # type: ignore[method-assign]
    return set_on


def _shared_memo(meta: Any) -> Callable[[bool], None]:
    """What GET derives from its shared decoded version (headers, the DEK's cipher) kept
    with it (`storage/shared_memo.py`), or computed on every read (as before)."""
    from gateway.s3.handlers import objects
    from storage import datakeys, shared_memo

    def fresh(record: Any, name: Any, make: Callable[[], Any]) -> Any:
        return make()

    def set_on(on: bool) -> None:
        objects.derived = datakeys.derived = shared_memo.derived if on else fresh
    return set_on


def _request_state(meta: Any) -> Callable[[bool], None]:
    """The S3 request's own `get`/`setdefault`/`pop` on its state dict (`gateway/app.py`),
    or the `Mapping` mixins' (a KeyError raised and caught per unset key, as before)."""
    from gateway.app import S3Request

    own = {n: vars(S3Request)[n] for n in ("get", "setdefault", "pop")}

    def set_on(on: bool) -> None:
        for n, f in own.items():
            if on:
                setattr(S3Request, n, f)
            elif n in vars(S3Request):
                delattr(S3Request, n)
    return set_on


def _bucket_copies(meta: Any) -> Callable[[bool], None]:
    """Bucket records decoded once per stored value and copied per caller
    (`BucketService._record`), or decoded on every read (as before)."""
    from storage.buckets import BucketService
    from storage.records import Bucket

    kept = BucketService._record

    def decode(self: Any, item: Any) -> Bucket:
        b = Bucket.decode(item.value)
        b.revision = item.revision
        return b

    def set_on(on: bool) -> None:
        BucketService._record = kept if on else decode  # type: ignore[method-assign]
    return set_on


def _small_get(meta: Any) -> Callable[[bool], None]:
    """A small GET answered as one `Response` (`objects.small_body_response`), or through the
    steps of a prepared stream as before: `prepare` with the headers held for the first
    write (the old `SmallBodyResponse`), the body through `BorrowedBodyWriter`, `write_eof`."""
    from aiohttp import web

    from gateway.s3.handlers import objects
    from gateway.s3.sendbody import BorrowedBodyWriter

    kept = objects.small_body_response

    class Streamed(web.StreamResponse):
        _send_headers_immediately = False

        def __init__(self, body: bytes, **kw: Any) -> None:
            super().__init__(**kw)
            self.content_length, self._held = len(body), body

        async def write_eof(self, data: bytes = b"") -> None:
            request = self._req
            if self._held and request is not None:
                async with BorrowedBodyWriter(request, self) as w:
                    await w.write(self._held)
            await super().write_eof()

    async def streamed(stream: Any, status: int, headers: dict[str, str]) -> Any:
        body = b"".join([bytes(c) async for c in stream])
        return Streamed(body, status=status, headers=headers)

    def set_on(on: bool) -> None:
        objects.small_body_response = kept if on else streamed  # type: ignore[assignment]
    return set_on


def _same_item(meta: Any) -> Callable[[bool], None]:
    """A re-read of an unchanged cached record hands out the same `Item`
    (`SqliteStore._cached_get`), or a new one each time (as before: every expiry of the
    record's 2 s life then decodes the version and derives its headers and cipher again)."""
    import time as _time

    from storage.metadata import Item
    from storage.metadata import sqlite as sq

    kept = vars(sq.SqliteStore)["_cached_get"]

    def fresh(key: bytes, gen: Any, conn: Any, cache: dict[bytes, Any], most: int,
              largest: int | None) -> Item | None:
        now, seen = _time.monotonic(), gen.value()
        hit = cache.get(key)
        if hit is not None and hit[0] == seen and hit[1] > now:
            return hit[2]  # type: ignore[no-any-return]
        row = conn.execute("SELECT v, rev FROM kv WHERE k=?", (key,)).fetchone()
        item = Item(key, row[0], row[1]) if row else None
        if item is None or largest is None or len(item.value) <= largest:
            if len(cache) >= most:
                cache.clear()
            cache[key] = (seen, now + sq.CACHE_TTL_S, item)
        return item

    def set_on(on: bool) -> None:
        sq.SqliteStore._cached_get = kept if on else staticmethod(fresh)  # type: ignore[assignment]
    return set_on


def _both(meta: Any) -> Callable[[bool], None]:
    """Lane small9's cuts together: `request-state`, `bucket-copies`, `small-get`."""
    parts = (_request_state(meta), _bucket_copies(meta), _small_get(meta))

    def set_on(on: bool) -> None:
        for part in parts:
            part(on)
    return set_on


TOGGLES: dict[str, Callable[[Any], Callable[[bool], None]]] = {  # given the TimedStore
    "object-cache": lambda meta: _switch(meta.inner, "_ogen"),
    "bucket-cache": lambda meta: _switch(meta.inner, "_gen"),
    "inline-flag": _inline_flag,
    "decoded-version": _decoded_version,
    "shared-memo": _shared_memo,
    "request-state": _request_state,
    "bucket-copies": _bucket_copies,
    "small-get": _small_get,
    "small9": _both,
    "same-item": _same_item,
    "none": lambda meta: (lambda on: None),
}


def _request(method: str, port: int, path: str, body: bytes, ak: str, sk: str) -> bytes:
    url = f"http://127.0.0.1:{port}{path}"
    headers = sign_headers(method, url, {"Content-Length": str(len(body))} if body else {},
                           body, ak, sk)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"{method} {path} HTTP/1.1\r\n{head}\r\n".encode() + body


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    raw: bytes) -> int:
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    if length:
        await reader.readexactly(length)
    return status


async def _round(port: int, requests: list[bytes], clients: int) -> float:
    """Send `requests` over `clients` connections; process CPU seconds per request."""
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(clients)]
    todo = iter(requests)

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for raw in todo:
            status = await _exchange(reader, writer, raw)
            if status >= 300:
                raise RuntimeError(f"request answered {status}")

    start = time.process_time()
    await asyncio.gather(*(client(r, w) for r, w in conns))
    cpu = time.process_time() - start
    for _, w in conns:
        w.close()
    return cpu / len(requests)


async def run(a: argparse.Namespace, data: Path) -> None:
    port = a.port
    runner, cred, meta = await build(port, data, 4096)
    ak, sk = cred.access_key, cred.secret_key
    toggle = TOGGLES[a.toggle](meta)
    body = os.urandom(a.size)
    await _exchange(*await asyncio.open_connection("127.0.0.1", port),
                    _request("PUT", port, "/abbench", b"", ak, sk))
    keys = [f"/abbench/obj-{i}" for i in range(a.objects)]
    for k in keys:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await _exchange(reader, writer, _request("PUT", port, k, body, ak, sk))
        writer.close()
    results: dict[bool, list[float]] = {True: [], False: []}
    wins = 0
    for r in range(a.rounds):
        pair = {}
        for on in ((True, False) if r % 2 == 0 else (False, True)):
            toggle(on)
            if a.op == "get":
                reqs = [_request("GET", port, keys[i % len(keys)], b"", ak, sk)
                        for i in range(a.requests)]
            else:
                tag = hashlib.sha256(os.urandom(8)).hexdigest()[:8]
                reqs = [_request("PUT", port, f"/abbench/put-{tag}-{i}", body, ak, sk)
                        for i in range(a.requests)]
            pair[on] = await _round(port, reqs, a.clients)
            results[on].append(pair[on])
        wins += pair[True] < pair[False]
        print(f"round {r + 1}: on {pair[True] * 1e3:.3f} off {pair[False] * 1e3:.3f} ms/op",
              flush=True)
    toggle(True)
    on, off = statistics.median(results[True]), statistics.median(results[False])
    print(f"{a.toggle} {a.op}: median on {on * 1e3:.3f} off {off * 1e3:.3f} ms/op "
          f"({(on - off) / off * 100:+.1f}%), on cheaper in {wins}/{a.rounds} rounds, "
          f"load {os.getloadavg()[0]:.1f}")
    await runner.cleanup()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--toggle", choices=sorted(TOGGLES), default="object-cache")
    ap.add_argument("--op", choices=("get", "put"), default="get")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--requests", type=int, default=800, help="per round and variant")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--objects", type=int, default=64, help="distinct objects GETs read")
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--port", type=int, default=10400)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="reqab-") as tmp:
        logs.setup("INFO", Path(tmp) / "gateway.log")  # every request logged, as served
        asyncio.run(run(a, Path(tmp)))


if __name__ == "__main__":
    main()
