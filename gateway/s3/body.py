"""Request bodies of uploads: aws-chunked decoding, length limits and every payload check.

The body is consumed as a stream; the checks that need the whole payload (SHA-256 of the
payload, Content-MD5, x-amz-checksum-*) run in `verify`, called by the object service
after the data is stored and before it is committed, so a bad body is never visible.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator

from aiohttp import web

from gateway.s3 import checksums
from gateway.s3.bodyrecv import DirectBody, direct_transport, drop_chunked, drop_rest
from gateway.s3.chunked import ChunkedDecoder
from gateway.s3.errors import S3Error
from gateway.s3.errors_map import to_s3_error
from gateway.s3.expect import send_continue
from gateway.s3.request_keys import BODY_DONE, BODY_REPLAY, BODY_TAKEN
from gateway.s3.sigv4 import AuthResult
from gateway.s3.sigv4_fields import SigV4Error
from storage.buffers import Lent
from storage.crypto.md5 import md5 as new_md5
from storage.widereads import WIDE_BODY_BYTES, wide_reads

BODY_IDLE_TIMEOUT_S = 20.0  # longest wait for the next body bytes (AWS: about 20 s)
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def content_md5_hex(value: str | None) -> str | None:
    """A Content-MD5 header (or POST form field) as hex, None when absent; anything but the
    base64 of 16 bytes is 400 InvalidDigest."""
    if value is None:
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise S3Error("InvalidDigest") from None
    if len(raw) != 16:
        raise S3Error("InvalidDigest")
    return raw.hex()


def sha256_mismatch(expected: str, computed: str) -> S3Error:
    return S3Error("XAmzContentSHA256Mismatch", ClientComputedContentSHA256=expected,
                   S3ComputedContentSHA256=computed)


def check_whole_body(request: web.BaseRequest, auth: AuthResult, body: bytes) -> None:
    """The signed payload SHA-256 and Content-MD5 of a body read whole apart from
    `RequestBody` (CompleteMultipartUpload, whose x-amz-checksum-* headers describe the
    object, not the body): a body the signature does not cover is refused, as on S3."""
    if auth.payload_mode.startswith("sha256:"):
        got = hashlib.sha256(body).hexdigest()
        if got != auth.payload_mode[7:]:
            raise sha256_mismatch(auth.payload_mode[7:], got)
    md5 = content_md5_hex(request.headers.get("Content-MD5"))
    if md5 is not None and md5 != new_md5(body).hexdigest():
        raise S3Error("BadDigest", "The Content-MD5 you specified did not match what we "
                      "received.")


class RequestBody:
    def __init__(self, request: web.BaseRequest, auth: AuthResult, max_size: int) -> None:
        h = request.headers
        mode = auth.payload_mode
        self._request = request
        self._decoder: ChunkedDecoder | None = None
        self.trailers: dict[str, str] = {}
        self.received = 0
        streaming = mode.startswith("streaming")
        raw_len = h.get("x-amz-decoded-content-length") if streaming else h.get("Content-Length")
        if raw_len is None and streaming and "Content-Length" not in h and not request.body_exists:
            raw_len = "0"
        if raw_len is None:
            if request.headers.get("Transfer-Encoding", "").lower() != "chunked":
                raise S3Error("MissingContentLength")
            self.length: int | None = None
        else:
            try:
                self.length = int(raw_len)
            except ValueError:
                raise S3Error("InvalidArgument", "Content-Length is not a number") from None
            if self.length < 0:
                raise S3Error("InvalidArgument", "Content-Length is negative")
        if self.length is not None and self.length > max_size:
            raise S3Error("EntityTooLarge", ProposedSize=str(self.length),
                          MaxSizeAllowed=str(max_size))
        self._max = max_size
        if streaming:
            trailer = h.get("x-amz-trailer")
            names = [n.strip() for n in trailer.split(",")] if trailer else None
            if mode.endswith("trailer") and names is None:
                names = []
            self._decoder = ChunkedDecoder(auth, mode in ("streaming-signed",
                                                          "streaming-signed-trailer"), names)
        self._sha256 = None
        self._expected_sha256 = None
        if mode.startswith("sha256:"):
            self._expected_sha256 = mode[7:]
            self._sha256 = hashlib.sha256()
        self.expected = checksums.from_headers(h)
        alg = h.get("x-amz-sdk-checksum-algorithm")
        announced = set(self.expected)
        trailer_names = h.get("x-amz-trailer", "")
        trailed = False
        for name in trailer_names.split(","):
            if name.strip().lower() in checksums.UNCHECKED_HEADERS:
                checksums.refuse_unchecked(name.strip().lower())
            a = checksums.algorithm_of_header(name.strip())
            if a:
                announced.add(a)
                trailed = True
        checksums.check_announced(alg, "x-amz-sdk-checksum-algorithm", self.expected,
                                  announced, trailed)
        self.checksums = {a: checksums.Checksum(a) for a in announced}
        self.content_md5 = content_md5_hex(h.get("Content-MD5"))

    def add_default_checksum(self) -> None:
        """Compute S3's default checksum (CRC64NVME) when the client asked for none: S3
        stores one for every object written without a checksum."""
        if not self.checksums:
            self.checksums[checksums.DEFAULT_ALGORITHM] = checksums.Checksum(
                checksums.DEFAULT_ALGORITHM)

    @property
    def integrity_declared(self) -> bool:
        """Whether the client sent Content-MD5 or an x-amz-checksum-*: a header, or a trailer
        of an aws-chunked body (whose decoder refuses a body that ends without it). A trailer
        named for a plain body would never come: naming it is not sending a digest."""
        trailer = self._request.headers.get("x-amz-trailer", "") if self._decoder else ""
        return bool(self.content_md5 or self.expected or any(
            checksums.algorithm_of_header(n.strip()) for n in trailer.split(",")))

    @property
    def digests(self) -> list[object]:
        """Hash objects the data path updates off the event loop."""
        out: list[object] = list(self.checksums.values())
        if self._sha256 is not None:
            out.append(self._sha256)
        return out

    async def __aiter__(self) -> AsyncIterator[bytes | Lent | memoryview]:
        await send_continue(self._request)  # the checks before the body are done (expect.py)
        with contextlib.ExitStack() as wide:
            if self.length is None or self.length >= WIDE_BODY_BYTES:
                wide.enter_context(wide_reads(self._request.transport, self._request.content))
            async with contextlib.aclosing(self._chunks()) as chunks:  # closed with this
                async for chunk in chunks:  # one, so an abandoned direct body ends at once
                    yield chunk

    async def _wire(self) -> AsyncIterator[bytes | Lent]:
        """The body's bytes as they arrive on the wire (aws-chunked framing and all)."""
        request = self._request
        replay = request.get(BODY_REPLAY)  # a body kept for a second run (replay.py)
        content = replay or request.content
        t = None if replay is not None else direct_transport(request, request.content_length)
        taken = 0
        try:
            while True:
                # What has arrived already is taken without a wait (readany's own result, with
                # no timer armed: a small body is all there with its headers).
                chunk = content.read_nowait()
                if not chunk and t is not None and request.content_length:
                    left = request.content_length - taken
                    if left > 0:  # the rest straight into pooled blocks (gateway/s3/bodyrecv.py)
                        direct = request[BODY_TAKEN] = DirectBody(t, t.get_protocol(), left,
                                                                  request.content)
                        direct.install()
                        try:
                            async with contextlib.aclosing(
                                    direct.blocks(BODY_IDLE_TIMEOUT_S)) as blocks:
                                async for block in blocks:
                                    yield block
                        except TimeoutError:
                            raise S3Error("RequestTimeout") from None
                        return
                if not chunk and not content.is_eof():
                    try:
                        # A stalled client must not hold a request (and its buffers) forever.
                        # readany: chunks as received, not joined into bigger ones (a copy per
                        # byte)
                        async with asyncio.timeout(BODY_IDLE_TIMEOUT_S):
                            chunk = await content.readany()
                    except TimeoutError:
                        raise S3Error("RequestTimeout") from None
                if not chunk:
                    return
                taken += len(chunk)
                yield chunk
        finally:  # given up with bytes still coming: dropped within bodyrecv's bounds
            if t is not None and request.get(BODY_TAKEN) is None and not content.is_eof():
                dropping = drop_rest(request, t)
                if dropping is not None:
                    request[BODY_TAKEN] = dropping
            elif (replay is None and request.content_length is None
                  and request.get(BODY_TAKEN) is None and not content.is_eof()):
                dropping = drop_chunked(request)  # transfer-encoding chunked: no length
                if dropping is not None:
                    request[BODY_TAKEN] = dropping

    async def _chunks(self) -> AsyncIterator[bytes | Lent | memoryview]:
        async with contextlib.aclosing(self._wire()) as wire:
            async for chunk in wire:
                if self._decoder is not None:
                    try:
                        pieces = self._decoder.feed(chunk)
                    except SigV4Error as exc:
                        raise to_s3_error(exc, None, None) from None
                    for p in pieces:  # views of the wire's bytes or Lent blocks: held
                        self._count(len(p))  # as they are (shardfeed.holdable), not copied
                        yield p
                else:
                    self._count(len(chunk))
                    yield chunk
        # the last byte received: where the access log's turn-around time starts
        self._request[BODY_DONE] = time.perf_counter()
        if self._decoder is not None:
            try:
                self.trailers = self._decoder.finish()
            except SigV4Error as exc:
                raise to_s3_error(exc, None, None) from None
        if self.length is not None and self.received != self.length:
            raise S3Error("IncompleteBody")

    def _count(self, n: int) -> None:
        self.received += n
        if self.length is not None and self.received > self.length:
            raise S3Error("IncompleteBody", "The request body is longer than announced.")
        if self.received > self._max:  # no length announced (chunked): the cap, as announced
            raise S3Error("EntityTooLarge", ProposedSize=str(self.received),
                          MaxSizeAllowed=str(self._max))

    def verify(self, md5_hex: str) -> dict[str, str]:
        """Check every digest the client sent; return the checksums to store."""
        if self._sha256 is not None and self._sha256.hexdigest() != self._expected_sha256:
            raise sha256_mismatch(self._expected_sha256 or "", self._sha256.hexdigest())
        if self.content_md5 is not None and self.content_md5 != md5_hex:
            raise S3Error("BadDigest", "The Content-MD5 you specified did not match what we "
                          "received.")
        stored: dict[str, str] = {}
        for alg, c in self.checksums.items():
            got = c.value()
            sent = self.expected.get(alg) or self.trailers.get(checksums.HEADER[alg])
            if sent is not None and sent != got:
                raise S3Error("BadDigest", f"The {alg} you specified did not match the "
                              "calculated checksum.")
            stored[alg] = got
        return stored
