"""aws-chunked request bodies: a push-based decoder that verifies chunk and trailer signatures.

Sans-I/O like `gateway.s3.sigv4`, whose `AuthResult` gives the seed signature and signing key.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from gateway.s3.sigv4 import _SIGNATURE, AuthResult
from gateway.s3.sigv4_fields import EMPTY_SHA256, SigV4Error
from storage.buffers import Lent

DEFAULT_MAX_CHUNK_SIZE = 16 * 1024 * 1024
MIN_CHUNK_SIZE = 8192  # AWS: every aws-chunked chunk but the last is at least 8 KiB
SMALL_PIECE = 4096  # pieces shorter than this are copied together, never held as views
TRAILER_SIGNATURE = "x-amz-trailer-signature"

_CHUNK_HEADER = re.compile(rb"([0-9a-fA-F]{1,16})(?:;chunk-signature=([0-9a-f]{64}))?")
_MAX_HEADER_LINE = 1024
_MAX_TRAILER_LINE = 4096
_MAX_TRAILER_BYTES = 16 * 1024
_MAX_TRAILERS = 16

_S_HEADER, _S_DATA, _S_DATA_CRLF, _S_TRAILER, _S_DONE = range(5)


class ChunkedDecoder:
    """Push-based decoder of ``aws-chunked`` bodies, verifying chunk signatures if signed.

    Unsigned bodies release payload as soon as it arrives; signed bodies hold one chunk
    (at most ``max_chunk_size`` bytes) until its signature verifies. ``trailer_names`` are
    the names announced in ``x-amz-trailer`` (None when the mode carries no trailer).

    Payload pieces of at least `SMALL_PIECE` bytes are views of the fed data, never copies:
    fed `bytes` or `Lent` blocks (what the direct receive hands on) never change while a
    view refers to them, so a view may be held like `bytes`; any other fed buffer is copied
    once on the way in. Shorter pieces (tiny chunks, or a read that cut a chunk) are copied
    together into one `bytes` of up to `SMALL_PIECE` bytes, released once it fills, the
    data ends or a signed chunk verifies, so held pieces never cost more memory in objects than they carry in payload.
    A chunk under `MIN_CHUNK_SIZE` bytes that is not the last is refused (403
    InvalidChunkSizeError), signed or unsigned-trailer, as S3 does.
    """

    def __init__(
        self,
        auth: AuthResult | None,
        signed: bool,
        trailer_names: list[str] | None,
        max_chunk_size: int = DEFAULT_MAX_CHUNK_SIZE,
    ) -> None:
        if signed and (auth is None or auth.anonymous or not auth.signing_key):
            raise ValueError("signed aws-chunked decoding needs a header-authenticated request")
        if max_chunk_size <= 0:
            raise ValueError("max_chunk_size must be positive")
        self._auth = auth
        self._signed = signed
        self._trailer_names = (
            None
            if trailer_names is None
            else [n.strip().lower() for n in trailer_names if n.strip()]
        )
        self._max_chunk = max_chunk_size
        self._state = _S_HEADER
        self._line = bytearray()
        self._remaining = 0
        self._chunk_sig = ""
        self._hasher = hashlib.sha256()
        self._held = _Pieces()  # a signed chunk's data, not yet verified
        self._out = _Pieces()  # released data not yet handed out (a short tail)
        self._chunks = 0  # data chunks started
        self._last_size = 0  # size of the previous data chunk
        self._previous = auth.signature if (signed and auth is not None) else ""
        self._crlf = bytearray()
        self._trailers: dict[str, str] = {}
        self._trailer_order: list[tuple[str, str]] = []
        self._trailer_bytes = 0
        self._decoded = 0
        self._error: SigV4Error | None = None

    @property
    def decoded_bytes(self) -> int:
        """Payload bytes released so far (compare with x-amz-decoded-content-length)."""
        return self._decoded

    @property
    def done(self) -> bool:
        """True once the final chunk and trailer section have been consumed."""
        return self._state == _S_DONE

    def feed(self, data: bytes | bytearray | memoryview) -> list[memoryview]:
        """Consume wire bytes; return decoded payload pieces that are safe to use."""
        if self._error is not None:
            raise self._error
        try:
            return self._feed(data)
        except SigV4Error as exc:
            self._error = exc
            raise

    def finish(self) -> dict[str, str]:
        """Signal end of input; return trailers (lowercase names), excluding the signature."""
        if self._error is not None:
            raise self._error
        if self._state != _S_DONE:
            self._error = SigV4Error(
                "IncompleteBody",
                "You did not provide the number of bytes specified by the Content-Length "
                "HTTP header.",
            )
            raise self._error
        return dict(self._trailers)

    def _feed(self, data: bytes | bytearray | memoryview) -> list[memoryview]:
        """State machine body of :meth:`feed`."""
        if not isinstance(data, bytes | Lent):
            data = bytes(data)  # callers may reuse mutable buffers; keep our views stable
        view = memoryview(data)
        out = self._out
        verified = False  # a signed chunk verified: release all of it now
        pos, end = 0, len(view)
        while pos < end:
            if self._state == _S_HEADER:
                line, pos = self._take_line(data, view, pos, _MAX_HEADER_LINE)
                if line is not None:
                    self._start_chunk(line)
            elif self._state == _S_DATA:
                take = min(self._remaining, end - pos)
                piece = view[pos : pos + take]
                pos += take
                self._remaining -= take
                if self._signed:
                    self._hasher.update(piece)
                    self._held.add(piece)
                    if self._remaining == 0:
                        self._verify_chunk()
                        for held in self._held.take(everything=True):
                            out.add(held)
                        verified = True
                else:
                    out.add(piece)
                if self._remaining == 0:
                    self._state = _S_DATA_CRLF
            elif self._state == _S_DATA_CRLF:
                need = 2 - len(self._crlf)
                self._crlf += view[pos : pos + need]
                pos += min(need, end - pos)
                if len(self._crlf) == 2:
                    if self._crlf != b"\r\n":
                        raise SigV4Error(
                            "IncompleteBody", "aws-chunked data is not followed by CRLF."
                        )
                    self._crlf.clear()
                    self._state = _S_HEADER
            elif self._state == _S_TRAILER:
                line, pos = self._take_line(data, view, pos, _MAX_TRAILER_LINE)
                if line is not None:
                    self._trailer_line(line)
            else:
                raise SigV4Error("InvalidRequest", "Unexpected data after the aws-chunked body.")
        released = out.take(everything=verified or self._state in (_S_TRAILER, _S_DONE))
        self._decoded += sum(len(p) for p in released)
        return released

    def _take_line(
        self, data: bytes, view: memoryview, pos: int, limit: int
    ) -> tuple[bytes | None, int]:
        """Accumulate up to a CRLF; return (line without CRLF or None, new position)."""
        window_end = min(len(data), pos + limit + 2 - len(self._line))
        nl = data.find(b"\n", pos, window_end)
        if nl < 0:
            self._line += view[pos:window_end]
            if len(self._line) > limit:
                raise SigV4Error("InvalidRequest", "aws-chunked framing line is too long.")
            return None, window_end
        self._line += view[pos:nl]
        if len(self._line) > limit + 1:
            raise SigV4Error("InvalidRequest", "aws-chunked framing line is too long.")
        if not self._line.endswith(b"\r"):
            raise SigV4Error("InvalidRequest", "aws-chunked framing line must end in CRLF.")
        line = bytes(self._line[:-1])
        self._line.clear()
        return line, nl + 1

    def _start_chunk(self, line: bytes) -> None:
        """Parse a chunk header line and enter the data (or trailer) state."""
        match = _CHUNK_HEADER.fullmatch(line)
        if match is None:
            raise SigV4Error("InvalidRequest", "Malformed aws-chunked chunk header.")
        size = int(match.group(1), 16)
        if size > self._max_chunk:
            raise SigV4Error(
                "InvalidRequest",
                f"aws-chunked chunk of {size} bytes exceeds the limit of {self._max_chunk}.",
            )
        sig = match.group(2)
        if size and self._chunks and self._last_size < MIN_CHUNK_SIZE:
            # signed or not (S3 refuses unsigned-trailer bodies' small chunks too)
            raise SigV4Error(
                "InvalidChunkSizeError",
                "Only the last chunk is allowed to have a size less than 8192 bytes",
                {"Chunk": str(self._chunks + 1), "BadChunkSize": str(self._last_size)},
            )
        if self._signed:
            if sig is None:
                raise SigV4Error("SignatureDoesNotMatch", "The chunk signature is missing.")
            self._chunk_sig = sig.decode("ascii")
            self._hasher = hashlib.sha256()
        if size == 0:
            if self._signed:
                self._verify_chunk()
            self._state = _S_TRAILER
        else:
            self._chunks += 1
            self._last_size = size
            self._remaining = size
            self._state = _S_DATA

    def _verify_chunk(self) -> None:
        """Check the current chunk's signature against the chain."""
        assert self._auth is not None
        string_to_sign = "\n".join(
            [
                "AWS4-HMAC-SHA256-PAYLOAD",
                self._auth.amz_date,
                self._auth.scope,
                self._previous,
                EMPTY_SHA256,
                self._hasher.hexdigest(),
            ]
        )
        expected = hmac.new(
            self._auth.signing_key, string_to_sign.encode("ascii"), hashlib.sha256
        ).hexdigest()
        if not hmac.compare_digest(expected, self._chunk_sig):
            raise SigV4Error(
                "SignatureDoesNotMatch",
                "The chunk signature we calculated does not match the signature you provided.",
                {"StringToSign": string_to_sign, "SignatureProvided": self._chunk_sig},
            )
        self._previous = expected

    def _trailer_line(self, line: bytes) -> None:
        """Record one trailer line; the empty line ends the body."""
        if not line:
            self._end_trailers()
            return
        self._trailer_bytes += len(line) + 2
        if self._trailer_bytes > _MAX_TRAILER_BYTES or len(self._trailer_order) >= _MAX_TRAILERS:
            raise SigV4Error("InvalidRequest", "aws-chunked trailer section is too large.")
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            raise SigV4Error("InvalidRequest", "aws-chunked trailer is not ASCII.") from None
        name, sep, value = text.partition(":")
        name, value = name.strip().lower(), value.strip()
        if not sep or not name:
            raise SigV4Error("InvalidRequest", "Malformed aws-chunked trailer line.")
        if any(n == name for n, _ in self._trailer_order):
            raise SigV4Error("InvalidRequest", f"Trailer {name} appears more than once.")
        if self._trailer_order and self._trailer_order[-1][0] == TRAILER_SIGNATURE:
            raise SigV4Error("InvalidRequest", "x-amz-trailer-signature must come last.")
        self._trailer_order.append((name, value))

    def _end_trailers(self) -> None:
        """Validate the trailer section against announcements and its signature."""
        received = [(n, v) for n, v in self._trailer_order if n != TRAILER_SIGNATURE]
        names = [n for n, _ in received]
        signature = next((v for n, v in self._trailer_order if n == TRAILER_SIGNATURE), None)
        if self._trailer_names is None:
            if self._trailer_order:
                raise SigV4Error("InvalidRequest", "Unexpected trailer in aws-chunked body.")
        else:
            extra = [n for n in names if n not in self._trailer_names]
            if extra:
                raise SigV4Error(
                    "InvalidRequest", f"Trailer {extra[0]} was not declared in x-amz-trailer."
                )
            missing = [n for n in self._trailer_names if n not in names]
            if missing:
                raise SigV4Error(
                    "IncompleteBody", f"The declared trailer {missing[0]} was not sent."
                )
            if self._signed:
                self._verify_trailer(received, signature)
            elif signature is not None:
                raise SigV4Error("InvalidRequest", "Unexpected x-amz-trailer-signature.")
        self._trailers = dict(received)
        self._state = _S_DONE

    def _verify_trailer(self, received: list[tuple[str, str]], signature: str | None) -> None:
        """Check x-amz-trailer-signature over the ``name:value\\n`` trailer lines."""
        assert self._auth is not None
        if signature is None or not _SIGNATURE.fullmatch(signature):
            raise SigV4Error("SignatureDoesNotMatch", "The trailer signature is missing.")
        canonical = "".join(f"{n}:{v}\n" for n, v in received).encode("ascii")
        string_to_sign = "\n".join(
            [
                "AWS4-HMAC-SHA256-TRAILER",
                self._auth.amz_date,
                self._auth.scope,
                self._previous,
                hashlib.sha256(canonical).hexdigest(),
            ]
        )
        expected = hmac.new(
            self._auth.signing_key, string_to_sign.encode("ascii"), hashlib.sha256
        ).hexdigest()
        if not hmac.compare_digest(expected, signature):
            raise SigV4Error(
                "SignatureDoesNotMatch",
                "The trailer signature we calculated does not match the signature you provided.",
                {"StringToSign": string_to_sign, "SignatureProvided": signature},
            )


class _Pieces:
    """Payload pieces in order: a piece of `SMALL_PIECE` bytes or more kept as it is (a
    view), shorter ones copied into a shared tail that becomes one piece when it fills, so
    a million 1-byte chunks make about 256 pieces, not a million 184-byte views."""

    def __init__(self) -> None:
        self._done: list[memoryview] = []
        self._tail = bytearray()

    def add(self, piece: memoryview) -> None:
        """Append one piece."""
        if len(piece) >= SMALL_PIECE:
            self._seal()
            self._done.append(piece)
            return
        self._tail += piece
        if len(self._tail) >= SMALL_PIECE:
            self._seal()

    def take(self, everything: bool) -> list[memoryview]:
        """The finished pieces (with the short tail too when ``everything``), removed."""
        if everything:
            self._seal()
        done, self._done = self._done, []
        return done

    def _seal(self) -> None:
        if self._tail:
            self._done.append(memoryview(bytes(self._tail)))
            self._tail.clear()
