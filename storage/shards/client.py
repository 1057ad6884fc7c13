"""The gateway side of the node API: authenticated, streaming shard PUT/GET/DELETE.

One streaming request per shard per stripe (never one per segment), bodies sent as a
sequence of frames, responses parsed incrementally and verified frame by frame.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
import msgpack

from storage.buffers import BufferPool
from storage.config import NodeSpec
from storage.errors import IntegrityError, ShardCorrupt, StorageError
from storage.shards import auth
from storage.shards.batching import NodeBatcher
from storage.shards.fetch import FetchError, ShardFetcher
from storage.shards.format import FrameReader, ShardHeader
from storage.shards.sender import Request, ShardSender
from storage.shards.slot import ShardSlot
from storage.shards.streamput import StreamPutter
from storage.shards.streamslots import StreamSlots

SMALL_SHARD_BYTES = 256 * 1024  # shards up to this size go through batch requests
BULK_BATCH_BYTES = 4 * 1024 * 1024  # repair's batch requests (`_batcher`), about this size
# ...and the most one of them may take, first byte sent to last byte read: the lane carries
# one batch per node at a time, so a node that answers a byte at a time (the socket's read
# timeout never fires) would otherwise hold every repair bound for it
BULK_DEADLINE_S = 60.0
HASH_OFF_LOOP_BYTES = 2 * 1024 * 1024  # body MAC (GMAC, ~7 GB/s) of chunks this large
# runs on a worker thread; a frame of a 4 MiB segment is MACed inline: the thread hop cost
# more CPU than the MAC itself


async def _sealed(body: AsyncIterator[bytes | memoryview], sealer: auth.BodySealer,
                  ) -> AsyncIterator[bytes | memoryview]:
    """`body`, each chunk fed to the body MAC (large ones off the event loop), then the
    trailer. hashlib releases the GIL, so the MAC runs beside the event loop's work."""
    async for chunk in body:
        if len(chunk) >= HASH_OFF_LOOP_BYTES:
            await asyncio.to_thread(sealer.update, chunk)
        else:
            sealer.update(chunk)
        yield chunk
        chunk = b""  # sent: not kept while the next one is awaited (the budget counts it)
    yield sealer.trailer()


class NodeError(StorageError):
    """A node refused or failed a request, or could not be reached."""

    def __init__(self, node_id: str, reason: str, status: int | None = None) -> None:
        super().__init__(f"node {node_id}: {reason}")
        self.node_id = node_id
        self.status = status


HEALTH_REASON_BYTES = 512  # of a refused health probe's answer, kept as the node's last error


def _put_refused(node: NodeSpec, status: int, answer: bytes) -> NodeError:
    """The NodeError of a whole-shard PUT the node answered with another status than 201."""
    return NodeError(node.id, f"PUT {status} {answer.decode('utf-8', 'replace')}", status)


class NodeClient:
    def __init__(self, session: aiohttp.ClientSession, secret: bytes,
                 read_timeout_s: float = 15.0,
                 bulk_deadline_s: float = BULK_DEADLINE_S) -> None:
        self._session = session
        self._secret = secret
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=3.0,
                                              sock_read=read_timeout_s)
        self._bulk_timeout = aiohttp.ClientTimeout(total=bulk_deadline_s, sock_connect=3.0,
                                                   sock_read=read_timeout_s)
        self._batchers: dict[str, NodeBatcher] = {}
        self._bulk: dict[str, NodeBatcher] = {}  # repair's whole-shard lane (see `_batcher`)
        self._fetch = ShardFetcher(secret, read_timeout_s)
        self.stream_slots = StreamSlots()  # shard GET streams per node (`read_blocks`)
        self._sender = ShardSender(read_timeout_s)
        # streamed PUTs with a length: sent from views on sockets that carry nothing else
        # (a node's lean front streams a PUT only on a connection it never gave aiohttp)
        self._streams = StreamPutter(read_timeout_s)
        self._whole_sealer = auth.WholeBodySealer(secret)

    def _headers(self, node: NodeSpec, method: str, path_qs: str) -> dict[str, str]:
        return auth.sign(self._secret, method, path_qs, node.id)

    async def _json(self, method: str, node: NodeSpec, path_qs: str) -> Any:
        try:
            async with self._session.request(method, node.url + path_qs, timeout=self._timeout,
                                             headers=self._headers(node, method, path_qs)) as r:
                if r.status == 404:
                    return None
                if r.status >= 300:
                    raise NodeError(node.id, f"{method} {r.status} {await r.text()}", r.status)
                return await r.json() if r.status != 204 else {}
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise NodeError(node.id, f"{type(exc).__name__}: {exc}") from None

    async def put_shard(self, node: NodeSpec, sid: str,
                        body: AsyncIterator[bytes | memoryview] | bytes | ShardSlot,
                        segments: int, length: int | None = None, *,
                        replace: bool = False) -> None:
        """Stream one shard file to a node, sealed with a body MAC trailer.

        `body` is a stream of chunks, or the whole file as bytes or in a `ShardSlot` (sent
        as one payload: no body task, queue or chunk generator; same request on the wire). `replace` (repair
        and rebalancing only) lets the node replace a shard stored under the id with other
        bytes; without it the node refuses to (409 shard_exists).
        """
        if isinstance(body, (bytes, ShardSlot)):
            await self._put_whole(node, sid, body, segments, replace)
            return
        path = f"/v1/shards/{sid}"
        extra = {"X-Tessera-Replace": "1"} if replace else {}
        if segments >= 0:
            extra["X-Tessera-Segments"] = str(segments)
        headers = auth.sign(self._secret, "PUT", path, node.id, headers=extra, trailer=True)
        headers["Content-Type"] = "application/octet-stream"
        sealed = _sealed(body, auth.BodySealer(self._secret, headers))
        if length is not None:
            await self._put_stream(node, path, headers, length, sealed)
            return
        try:  # chunked (no length known): aiohttp's, on the shared session
            async with self._session.put(node.url + path,
                                         data=sealed, headers=headers,
                                         timeout=self._timeout) as r:
                if r.status != 201:
                    raise NodeError(node.id, f"PUT {r.status} {await r.text()}", r.status)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise NodeError(node.id, f"{type(exc).__name__}: {exc}") from None

    async def _put_stream(self, node: NodeSpec, path: str, headers: dict[str, str],
                          length: int, sealed: AsyncIterator[bytes | memoryview]) -> None:
        """`put_shard` of a body of known `length` through the `StreamPutter`."""
        head = (f"PUT {path} HTTP/1.1\r\nHost: {node.address}\r\n"
                f"Content-Length: {length + auth.TRAILER_BYTES}\r\n"
                + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
                ).encode("latin-1")
        try:
            status, answer = await self._streams.put(node, head, sealed)
        except FetchError as exc:
            raise NodeError(node.id, exc.reason, exc.status) from None
        if status != 201:
            raise _put_refused(node, status, answer)

    async def put_shards(self, puts: Sequence[tuple[NodeSpec, str, ShardSlot]],
                         stall_s: float) -> list[str | None]:
        """Whole one-segment shard files to their nodes, `put_shard` each, all sent from
        this coroutine (`ShardSender.request_many`: no task or timeout per shard); per
        put, None or the error (as `str` of the NodeError `put_shard` raises, or a
        "did not confirm" once `stall_s` is over)."""
        outcomes = await self._sender.request_many(
            [(node, self._whole_request(node, sid, slot, 1, False)) for node, sid, slot in puts],
            stall_s)
        errors: list[str | None] = []
        for (node, _, _), got in zip(puts, outcomes, strict=True):
            if isinstance(got, TimeoutError):
                errors.append(f"node {node.id} did not confirm within {stall_s:.0f}s")
            elif isinstance(got, FetchError):
                errors.append(str(NodeError(node.id, got.reason, got.status)))
            elif isinstance(got, StorageError):
                errors.append(str(got))
            else:
                status, answer = got
                errors.append(None if status == 201 else str(_put_refused(node, status, answer)))
        return errors

    async def _put_whole(self, node: NodeSpec, sid: str, body: bytes | ShardSlot,
                         segments: int, replace: bool) -> None:
        """`put_shard` of a body already whole, through the lean `ShardSender` (from a
        `ShardSlot`: head, shard and trailer sent as one view of the slot's buffer)."""
        try:
            status, answer = await self._sender.request(
                node, self._whole_request(node, sid, body, segments, replace))
        except FetchError as exc:
            raise NodeError(node.id, exc.reason, exc.status) from None
        if status != 201:
            raise _put_refused(node, status, answer)

    def _whole_request(self, node: NodeSpec, sid: str, body: bytes | ShardSlot,
                       segments: int, replace: bool) -> Request:
        """The lean sender's request builder for a whole shard file (signed afresh for
        each call: a retry needs a new nonce)."""
        payload = body.body if isinstance(body, ShardSlot) else body
        path = f"/v1/shards/{sid}"
        extra = {"X-Tessera-Replace": "1"} if replace else {}
        if segments >= 0:
            extra["X-Tessera-Segments"] = str(segments)

        def build() -> list[bytes | memoryview]:  # signed afresh for a retry
            headers = auth.sign(self._secret, "PUT", path, node.id, headers=extra,
                                trailer=True)
            head = (f"PUT {path} HTTP/1.1\r\nHost: {node.address}\r\n"
                    "Content-Type: application/octet-stream\r\n"
                    f"Content-Length: {len(payload) + auth.TRAILER_BYTES}\r\n"
                    + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
                    ).encode("latin-1")
            trailer = self._whole_sealer.trailer(headers, payload)
            whole = body.request(head, trailer) if isinstance(body, ShardSlot) else None
            return [whole] if whole is not None else [head, payload, trailer]

        return build

    async def delete_shard(self, node: NodeSpec, sid: str) -> None:
        await self._json("DELETE", node, f"/v1/shards/{sid}")

    async def stat_shard(self, node: NodeSpec, sid: str) -> dict[str, Any] | None:
        """The node's stat of a shard, None when it has none (batched with other ops)."""
        res = await self._batcher(node).submit({"op": "stat", "id": sid})
        status = res.get("status")
        if status == 200:
            return dict(res["stat"])
        if status == 404:
            return None
        if status == 400:  # a node from before batched stats: ask it alone
            return await self._json("GET", node, f"/v1/shards/{sid}/stat")
        raise NodeError(node.id, f"stat {status} {res.get('message', '')}", status)

    async def list_shards(self, node: NodeSpec, after: str = "", limit: int = 1000) -> list[str]:
        out = await self._json("GET", node, f"/v1/shards?after={after}&limit={limit}")
        return list(out["shards"] if isinstance(out, dict) else out or [])

    async def quarantined(self, node: NodeSpec, since: float = 0.0) -> list[dict[str, Any]]:
        """Sidecars of shards the node quarantined after `since` (epoch seconds)."""
        out = await self._json("GET", node, f"/v1/quarantine?since={since:.6f}")
        return list(out.get("quarantined", [])) if isinstance(out, dict) else []

    async def quarantine_shard(self, node: NodeSpec, sid: str, reason: str,
                               segment: int | None = None) -> bool:
        """Ask a node to move a shard aside (`reason`: [a-z0-9-]); False if it had none."""
        path = f"/v1/shards/{sid}/quarantine?reason={reason}"
        if segment is not None:
            path += f"&segment={segment}"
        return await self._json("POST", node, path) is not None

    async def scrub_status(self, node: NodeSpec) -> dict[str, Any]:
        """The node scrubber's progress ({} when the node does not run one)."""
        out = await self._json("GET", node, "/v1/scrub")
        return out if isinstance(out, dict) else {}

    async def ack_lost_packs(self, node: NodeSpec, packs: list[int]) -> list[int]:
        """Tell a node its lost packs `packs` are dealt with (its health's `packs_lost`):
        the ones it stops reporting."""
        out = await self._json("POST", node,
                               "/v1/packs/lost/ack?packs=" + ",".join(map(str, packs)))
        return list(out.get("acknowledged", [])) if isinstance(out, dict) else []

    async def health(self, node: NodeSpec, timeout_s: float = 2.0) -> dict[str, Any]:
        path = "/v1/health"
        try:
            async with self._session.get(node.url + path, headers=self._headers(node, "GET", path),
                                         timeout=aiohttp.ClientTimeout(total=timeout_s)) as r:
                if r.status != 200:  # with the node's reason: "request outside the replay
                    # window" says a clock is off, which "health 401" alone did not
                    said = (await r.content.read(HEALTH_REASON_BYTES)).decode("utf-8", "replace")
                    raise NodeError(node.id, f"health {r.status} {said}".rstrip(), r.status)
                return await r.json()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise NodeError(node.id, f"{type(exc).__name__}: {exc}") from None

    # -- small shards, batched per node (POST /v1/batch) ------------------------------------

    def _batcher(self, node: NodeSpec, bulk: bool = False) -> NodeBatcher:
        """The node's batcher. `bulk`: a second one for repair's whole shards (many
        stripes' source reads or rebuilt shards in one request of a few MiB), so a
        client's small reads never queue behind repair's megabytes."""
        table = self._bulk if bulk else self._batchers
        b = table.get(node.url)
        if b is None:
            b = table[node.url] = NodeBatcher(
                lambda ops, node=node: self._send_batch(node, ops, bulk=bulk),
                **({"max_inflight": 1, "max_bytes": BULK_BATCH_BYTES} if bulk else {}))
        return b

    async def _send_batch(self, node: NodeSpec, ops: list[dict[str, Any]], bulk: bool = False,
                          ) -> list[dict[str, Any]]:
        """One batch request; on the repair lane (`bulk`) it ends by `BULK_DEADLINE_S`."""
        path = "/v1/batch"
        body = msgpack.packb({"ops": ops}, use_bin_type=True)
        headers = auth.sign(self._secret, "POST", path, node.id,
                            body_sha256=auth.body_digest(body))
        headers["Content-Type"] = "application/msgpack"
        try:
            async with self._session.post(node.url + path, data=body, headers=headers,
                                          timeout=self._bulk_timeout if bulk
                                          else self._timeout) as r:
                if r.status != 200:
                    raise NodeError(node.id, f"batch {r.status} {await r.text()}", r.status)
                results = msgpack.unpackb(await r.read(), raw=False)["results"]
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise NodeError(node.id, f"{type(exc).__name__}: {exc}") from None
        except (ValueError, KeyError, TypeError, msgpack.UnpackException) as exc:
            raise NodeError(node.id, f"bad batch answer: {exc}") from None
        if not isinstance(results, list):
            raise NodeError(node.id, "bad batch answer")
        return results

    async def put_small(self, node: NodeSpec, sid: str, data: bytes, segments: int, *,
                        replace: bool = False, bulk: bool = False) -> None:
        """Store a whole small shard (header + frames); returns once the node fsynced it.
        `replace` as for `put_shard`; `bulk` on the repair lane (`_batcher`)."""
        op = {"op": "put", "id": sid, "segments": segments, "data": data}
        if replace:
            op["replace"] = True
        res = await self._batcher(node, bulk).submit(op, len(data))
        if res.get("status") != 201:
            raise NodeError(node.id, f"PUT {res.get('status')} {res.get('message', '')}",
                            res.get("status"))

    async def read_small(self, node: NodeSpec, sid: str, expect: ShardHeader, first: int,
                         count: int, *, bulk: int = 0) -> list[tuple[int, bytes]]:
        """Verified (segment, block) frames [first, first+count) of a small shard, read in
        one batched request; the header must name the expected stripe and index. `bulk`:
        the answer's expected bytes, read on the repair lane (`_batcher`)."""
        res = await self._batcher(node, bulk > 0).submit(
            {"op": "get", "id": sid, "first": first, "count": count}, bulk)
        status = res.get("status")
        if status == 409:
            raise ShardCorrupt(sid, f"node {node.id} reports corruption")
        if status != 200:
            raise NodeError(node.id, f"GET {status}", status)
        reader = FrameReader(first_segment=first)
        try:
            frames = reader.feed(res["data"])
        except (IntegrityError, KeyError, TypeError) as exc:
            raise ShardCorrupt(sid, f"on {node.id}: {exc}") from None
        h = reader.header
        if h is None or h.stripe_id != expect.stripe_id or h.index != expect.index:
            raise ShardCorrupt(sid, f"on {node.id}: header names another shard")
        if len(frames) != count or reader.pending:
            raise NodeError(node.id, f"short read: {len(frames)} of {count} frames")
        return frames

    async def read_frames(self, node: NodeSpec, sid: str, expect: ShardHeader, first: int,
                          count: int) -> AsyncIterator[tuple[int, bytes]]:
        """Yield verified (segment, block) frames [first, first+count) of one shard.

        The header must match the expected stripe id and index, so a shard file swapped
        with another one is refused, never decoded.
        """
        path = f"/v1/shards/{sid}?first={first}&count={count}"
        try:
            async with self._session.get(node.url + path, headers=self._headers(node, "GET", path),
                                         timeout=self._timeout) as r:
                if r.status == 409:
                    raise ShardCorrupt(sid, f"node {node.id} reports corruption")
                if r.status != 200:
                    raise NodeError(node.id, f"GET {r.status}", r.status)
                reader = FrameReader(first_segment=first)
                got = 0
                async for chunk in r.content.iter_any():
                    try:
                        frames = reader.feed(chunk)
                    except IntegrityError as exc:
                        raise ShardCorrupt(sid, f"on {node.id}: {exc}") from None
                    if reader.header is not None and (
                        reader.header.stripe_id != expect.stripe_id
                        or reader.header.index != expect.index
                    ):
                        raise ShardCorrupt(sid, f"on {node.id}: header names another shard")
                    for f in frames:
                        got += 1
                        yield f
                if got != count:
                    raise NodeError(node.id, f"short read: {got} of {count} frames")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise NodeError(node.id, f"{type(exc).__name__}: {exc}") from None

    async def read_frames_into(self, node: NodeSpec, sid: str, expect: ShardHeader, first: int,
                               count: int, pool: BufferPool,
                               ) -> AsyncIterator[tuple[int, memoryview, bytearray]]:
        """`read_frames` into pooled buffers, received there by the socket
        (`storage.shards.fetch`): yields (segment, block view, buffer), each verified; the
        consumer gives the buffer back to `pool` when done with the view."""
        try:  # aclosing: a reader closed early returns the prefetched frames' buffers now
            async with contextlib.aclosing(
                    self._fetch.frames(node, sid, expect, first, count, pool)) as frames:
                async for item in frames:
                    yield item
        except FetchError as exc:
            raise NodeError(node.id, exc.reason, exc.status) from None

    def close(self) -> None:
        """Close the shard fetcher's, sender's and stream putter's idle connections (not the
        session)."""
        self._fetch.close()
        self._sender.close()
        self._streams.close()
