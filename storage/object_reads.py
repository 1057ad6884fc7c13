"""Reading objects: a key's current or named version, and its bytes from the manifest.

Reads use only the manifest (inline body, or stripes and the nodes it names): placement
is never recomputed on the read path. A base of `ObjectService` (storage/objects.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

from storage import inline_bodies
from storage.crypto.aead import SegmentCipher
from storage.crypto.keys import segment_aad
from storage.datakeys import DataKeys, identity
from storage.errors import InvalidRange, ObjectNotFound
from storage.keyspace import object_key, span, urgent_repair_key, version_prefix
from storage.metadata import Item, MetadataStore
from storage.pipeline import StripeCodec
from storage.records import Bucket, ObjectVersion, PartLayout, pack
from storage.shared_memo import share
from storage.stripes import StripeStore

DECODED_MAX = 1024  # decoded current versions kept for GET and HEAD (then started over)
DECODED_BYTES = 16384  # only of records up to this size (the store's cache keeps no larger)


class ObjectReads:
    """HEAD/GET side of `ObjectService`: find a version, stream its plaintext or sealed bytes."""

    _meta: MetadataStore
    _stripes: StripeStore
    data_keys: DataKeys
    _decoded: dict[bytes, tuple[Item, ObjectVersion]]  # `_current_shared`'s, by record key

    def codec_for(self, v: ObjectVersion, part: PartLayout, cipher: SegmentCipher | None,
                  ) -> StripeCodec:
        raise NotImplementedError

    async def _versions_raw(self, bucket: str, key: str) -> list:
        return await self._meta.range(*span(version_prefix(bucket, key)), limit=100000)

    async def head(self, b: Bucket, key: str, version_id: str | None = None,
                   shared: bool = False, bodies: bool = True) -> ObjectVersion:
        """The current (or named) version in bucket `b`; a delete marker is returned, not
        raised. `shared`: the caller only reads the version (GET, HEAD), so the current
        one may be the instance decoded for an earlier read of the same record. `bodies`
        False: the current version's inline bodies kept apart may be left unresolved (a
        HeadObject's answer uses none; `read` resolves them if asked)."""
        bucket = b.name
        if version_id is None:
            if shared and not inline_bodies.enabled(self._meta):
                current = await self._current_shared(bucket, key)
            else:
                _, current = await inline_bodies.read_current(self._meta, bucket, key, bodies)
            if current is None:
                raise ObjectNotFound(bucket, key)
            return current
        cur = await self._meta.get(object_key(bucket, key))
        if cur is not None:
            cv = ObjectVersion.decode(cur.value)
            if cv.version_id == version_id:
                return await inline_bodies.resolve(self._meta, cv)
        for item in await self._versions_raw(bucket, key):
            v = ObjectVersion.decode(item.value)
            if v.version_id == version_id:
                return await inline_bodies.resolve(self._meta, v)
        raise ObjectNotFound(bucket, key, version_id)

    async def _current_shared(self, bucket: str, key: str) -> ObjectVersion | None:
        """The current version, decoded once per record the store hands out: a store that
        keeps records in memory (SQLite's) returns the same `Item` until the record changes,
        and its decoded version is reused (a 4 KiB object's record is ~20% of a GET's CPU
        to decode). Never to be modified: callers only read it."""
        okey = object_key(bucket, key)
        item = await self._meta.get(okey)
        if item is None:
            self._decoded.pop(okey, None)  # deleted: nothing kept for it
            return None
        hit = self._decoded.get(okey)
        if hit is not None and hit[0] is item:
            return hit[1]
        v = ObjectVersion.decode(item.value)
        if len(item.value) <= DECODED_BYTES:
            if len(self._decoded) >= DECODED_MAX:
                self._decoded.clear()
            share(v)  # what is derived from it is kept with it (storage/shared_memo.py)
            self._decoded[okey] = (item, v)
        return v

    async def read(self, v: ObjectVersion, start: int = 0, end: int | None = None,
                   on_damage: Callable[[bytes, int, str], None] | None = None,
                   sse_c_key: bytes | None = None, borrowed: bool = False,
                   ) -> AsyncIterator[bytes | memoryview]:
        """Plaintext bytes [start, end) of a version, streamed segment by segment.

        `borrowed` (`StripeStore.read`): chunks may be views of reused buffers, valid only
        until the next one is asked for; the consumer copies what it keeps."""
        end = v.size if end is None else end
        if start < 0 or end > v.size or start > end:
            raise InvalidRange(v.size)
        if start == end:
            return
        if inline_bodies.unresolved(v):
            await inline_bodies.resolve(self._meta, v)
        cipher = await self.data_keys.cipher_for(v, sse_c_key)
        offset = 0
        for part in v.parts:
            p_start, p_end = offset, offset + part.plaintext_size
            offset = p_end
            if p_end <= start or p_start >= end or part.size == 0:
                continue
            lo, hi = max(start, p_start) - p_start, min(end, p_end) - p_start
            if part.inline:
                aad = segment_aad(identity(v), part.number, 0, True)
                yield cipher.open(0, part.inline, aad)[lo:hi]
                continue
            codec = self.codec_for(v, part, cipher)
            if part.compressed:
                async with contextlib.aclosing(
                        self._read_compressed(codec, part, lo, hi, on_damage)) as pieces:
                    async for piece in pieces:
                        yield piece
                continue
            first, last = lo // part.segment_size, (hi - 1) // part.segment_size
            seg = first
            async with contextlib.aclosing(self._stripes.read(
                    codec, part.nodes, part.size, first, last,
                    on_damage or self._report_damage, borrowed)) as plains:
                async for plain in plains:
                    seg_start = seg * part.segment_size
                    a = max(lo - seg_start, 0)
                    b = min(hi - seg_start, len(plain))
                    yield plain[a:b] if (a, b) != (0, len(plain)) else plain
                    seg += 1

    async def read_sealed(self, v: ObjectVersion, part: PartLayout) -> AsyncIterator[bytes]:
        """One part's segments as stored, still sealed: needs no key (re-coding SSE-C data).

        Each block is checked against its frame checksum; the GCM tags are checked when
        the data is next opened with the key.
        """
        if part.body_ref and not part.inline:
            await inline_bodies.resolve(self._meta, v)
        if part.inline:
            yield part.inline
            return
        if part.size == 0:
            return
        from storage.pipeline import segment_count

        last = segment_count(part.size, part.segment_size) - 1
        async for sealed in self._stripes.read(self.codec_for(v, part, None), part.nodes,
                                               part.size, 0, last, self._report_damage):
            yield sealed

    async def _read_compressed(self, codec: StripeCodec, part: PartLayout, lo: int, hi: int,
                               on_damage: Callable[[bytes, int, str], None] | None,
                               ) -> AsyncIterator[bytes]:
        """Plaintext [lo, hi) of a compressed part: decompressed from its start (archive)."""
        from storage.compression import decompress_stream
        from storage.pipeline import segment_count

        last = segment_count(part.size, part.segment_size) - 1
        stored = self._stripes.read(codec, part.nodes, part.size, 0, last,
                                    on_damage or self._report_damage)
        pos = 0
        plains = decompress_stream(stored)
        try:
            async for plain in plains:
                a, b = max(lo - pos, 0), min(hi - pos, len(plain))
                pos += len(plain)
                if a < b:
                    yield plain[a:b] if (a, b) != (0, len(plain)) else plain
                if pos >= hi:
                    break
        finally:
            await plains.aclose()
            await stored.aclose()  # type: ignore[attr-defined]

    def _report_damage(self, stripe_id: bytes, index: int, reason: str) -> None:
        import asyncio

        asyncio.get_running_loop().create_task(self._meta.put(  # one shard fewer: urgent
            urgent_repair_key(stripe_id), pack({"index": index, "reason": reason[:200]})))
