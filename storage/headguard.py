"""Limits on one HTTP request's head, for every aiohttp server here (gateway and nodes): its
bytes over all its header lines together, and its time.

aiohttp bounds each line (`max_field_size`) and the number of header lines (`max_headers`,
128) but not their sum, and puts no deadline on a head: one connection could make a process
hold 128 lines of 16 KiB (2 MiB of headers, ~3 MiB of memory) for as long as it trickles
them, a thousand connections gigabytes. `CappedHandler` counts what a connection sends while
it is between requests (no request yet, or the last one's body wholly received) and, past
its `max_bytes` before a request's head is complete, answers the server's refusal and
closes the connection (or only closes it when an earlier request is still being answered on
it: no answer may be cut into). After its refusal it reads on and drops what the client
still sends (at most `DROP_BYTES`, for `DROP_S`) until the client closes: closing on unread
bytes would reset the connection, and a client still sending its head would see the reset,
not the refusal. That bounds memory within one socket read; a server that
must answer a head over the cap the same whatever the reads measures complete heads itself
(the S3 pipeline: `gateway.s3.headlimit`). A head not complete `head_timeout_s` after it
began (after the connection opened, for the first; after its first byte, for a later one on
a keep-alive connection) closes the connection.

A head aiohttp's parser refuses (a garbage request line, a line over its limit, more than its
header count, an invalid header byte, bad chunked framing) is answered by the listener's own
`malformed` answer (S3's XML error, the admin API's JSON) and logged as one line, not as
aiohttp's plain text and ERROR traceback: it is the client's error, and the connection closes.

A head that repeats Content-Length with one same value reaches the parser with that line once
(`single_content_length`): RFC 9110 section 8.6 allows a recipient to take it, AWS does, and
rclone before 1.59 sends it on every single-part upload (a presigned PUT whose signed headers
repeat Go's own Content-Length), which the parser (llhttp, and aiohttp's singleton check) refuses
outright. Differing values are left for the parser to refuse (request smuggling). The parser
gets a head's lines as they come, up to its first Content-Length line; from there the head is
held back until it is whole (`HeadHold`), however the reads cut it. A partial line is held only
while it could still become that Content-Length line (at most its first 15 bytes), so a head
the parser refuses before it (a garbage request line, TLS on a plain port) is refused at once,
and a line of the held part the parser refuses (a bare LF or CR, a name not a token, no colon,
a control byte in a value, a differing Content-Length) hands it to the parser at once too (the
blank line this hold waits for may never come).

A body's chunked framing the parser refuses in a later socket read, once the request's
handler runs, is that request's body error (`RequestPayloadError` from its stream, as
aiohttp's pure-Python parser raises it), not a second request's: aiohttp's C parser queued it
as one, which no answer could reach while the handler waited out its idle limit for body
bytes that never come; the connection closes after the handler's answer.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import re
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.helpers import set_exception
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError
from aiohttp.web_protocol import RequestHandler, RequestPayloadError, _ErrInfo

log = logging.getLogger(__name__)

HEAD_MAX_BYTES = 64 * 1024  # a node's cap on one head: its request line and header lines
# together (the gateway's is `[gateway] max_header_bytes`)
DROP_BYTES = 1024 * 1024  # after a refusal, what the client still sends is read and dropped
DROP_S = 10.0  # up to this many bytes and for this long (aiohttp's lingering time), at most


Malformed = Callable[[HttpProcessingError], web.StreamResponse]


def parse_error_summary(exc: HttpProcessingError) -> str:
    """What aiohttp's parser refused, in one short line without the bytes it quotes (they
    may be a header's value: an Authorization, a cookie)."""
    first = (exc.message or type(exc).__name__).strip().split("\n", 1)[0]
    return re.split(r":\s*(?:b['\"]|bytearray\()|\s+['\"]", first, maxsplit=1)[0].rstrip(":")[:120]


def payload_error_summary(exc: BaseException) -> str:
    """What broke a body's framing (a `RequestPayloadError` from its stream), in one short
    line without the bytes the parser quotes."""
    cause = exc.__cause__
    if isinstance(cause, HttpProcessingError):
        return parse_error_summary(cause)
    return str(exc).strip().split("\n", 1)[0][:120]


def plain_malformed(exc: HttpProcessingError) -> web.StreamResponse:
    """The default answer to a head the parser refused: 400 with a one-line text."""
    return web.Response(status=400, text=parse_error_summary(exc) + "\n")


def closing_answer(status: int, content_type: str, body: bytes,
                   headers: Iterable[tuple[str, str]] = ()) -> bytes:
    """A whole HTTP/1.1 answer, written raw before any request exists, after which the
    connection closes: its status line, Content-Type, Content-Length, Date, `headers`."""
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", f"Content-Type: {content_type}",
             f"Content-Length: {len(body)}", f"Date: {email.utils.formatdate(usegmt=True)}",
             *(f"{k}: {v}" for k, v in headers), "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1") + body


def single_content_length(buf: bytes, end: int, request_line: bool = True) -> bytes:
    """`buf` (a request head ending at `end`, where its blank line begins, and what follows)
    with any Content-Length line that repeats the first one's value dropped; unchanged when
    the values differ, are not a number or a header line is folded. Without `request_line`,
    `buf` begins at a header line (the lines before it went to the parser already)."""
    head = buf[:end]
    if (b"\n" + head if not request_line else head).lower().count(b"\ncontent-length:") < 2:
        return buf
    lines = head.split(b"\r\n")
    value: bytes | None = None
    kept = lines[:1] if request_line else []
    for line in lines[1:] if request_line else lines:
        if line[:1] in (b" ", b"\t"):
            return buf  # obs-fold: leave the whole head to the parser
        name, colon, rest = line.partition(b":")
        if colon and name.lower() == b"content-length":
            v = rest.strip(b" \t")
            if not v.isdigit() or (value is not None and v != value):
                return buf
            if value is not None:
                continue
            value = v
        kept.append(line)
    return b"\r\n".join(kept) + buf[end:]


CL_NAME = b"content-length:"
_TCHAR = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
_VALUE = rb"[^\x00-\x08\x0a-\x1f\x7f]*"  # what the parser refuses in a value: control bytes
# (DEL too) but HT
_WHOLE_LINE = re.compile(rb"(" + _TCHAR + rb"+):(" + _VALUE + rb")")
_NAME_PART = re.compile(_TCHAR + rb"*")
_VALUE_BAD = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


class HeadHold:
    """What of a request head the parser may have yet: its lines as they come, up to the
    first Content-Length line; from there, nothing until the head is whole, then the rest
    with a repeated Content-Length dropped (`single_content_length`). Each read is looked at
    once (a held part grows in a `bytearray` and only its new bytes are searched), so a head
    trickled a byte at a time costs what one read of it would."""

    __slots__ = ("_held", "_in_value", "_length", "_line", "_line_at", "_lines", "_open",
                 "_passing")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """A new head begins."""
        self._lines = 0  # lines of this head the parser has whole
        self._open = False  # the current line's start went to the parser: the rest may too
        self._line = b""  # the current line's start, while it could be a Content-Length line
        self._held: bytearray | None = None  # from the first Content-Length line on
        self._passing = False  # a line the parser refuses: nothing to hold of this head
        self._length: bytes | None = None  # the held part's first Content-Length value
        self._in_value = False  # the unfinished held line's colon came
        self._line_at = 0  # where in the held part its unfinished line begins

    def feed(self, data: bytes) -> bytes:
        """The bytes the parser may have now, `data` being the head's next read (and, once
        the head ends in it, what follows the head)."""
        if self._passing:
            return data
        if self._held is not None:
            return self._more(data)
        if not (self._lines or self._open or self._line):  # a head begins with this read
            end = data.find(b"\r\n\r\n")
            if end >= 0:  # and is whole in it: the common case
                return single_content_length(data, end)
        buf = self._line + data if self._line else data
        self._line = b""
        out = bytearray()
        pos = 0
        while (nl := buf.find(b"\n", pos)) >= 0:
            if self._open:  # the rest of a line begun in an earlier read
                self._open = False
            elif self._lines and buf[pos:nl] in (b"\r", b""):  # the blank line: head ends
                self.reset()
                return bytes(out) + buf[pos:]
            elif self._lines and buf[pos:pos + len(CL_NAME)].lower() == CL_NAME:
                self._held = bytearray()
                return bytes(out) + self._more(buf[pos:])
            out += buf[pos:nl + 1]
            self._lines += 1
            pos = nl + 1
        rest = buf[pos:]
        if rest and not self._open and self._lines:
            low = rest[:len(CL_NAME)].lower()
            if low == CL_NAME:
                self._held = bytearray()
                return bytes(out) + self._more(rest)
            if rest == b"\r" or CL_NAME.startswith(low):  # may be the blank line or a CL
                self._line = rest
                return bytes(out)
        if rest:
            self._open = True
        return bytes(out) + rest

    def _more(self, data: bytes) -> bytes:
        """Hold `data` after the held part; the head with a repeated Content-Length dropped
        once its blank line is in, or the whole held part as soon as it shows a line the
        parser refuses (a bare LF, a malformed line, a differing Content-Length)."""
        held = self._held
        assert held is not None
        start = len(held)
        held += data
        line = self._line_at  # where the line `data` continues began (kept: no search back)
        nl = held.find(b"\n", start)
        while nl >= 0:  # never at 0: the held part begins with "content-length:"
            if held[nl - 1] != 0x0D:  # a bare LF: the parser's to refuse, now
                return self._pass()
            if held[nl - 3:nl + 1] == b"\r\n\r\n":
                self.reset()
                return single_content_length(bytes(held), nl - 3, request_line=False)
            if not self._fits(held[line:nl - 1]):
                return self._pass()
            line = nl + 1
            nl = held.find(b"\n", line)
        if line >= start:  # the unfinished line began in this read
            self._in_value = False
        elif start < len(held) and held[start - 1] == 0x0D:  # a CR the last read ended with
            return self._pass()  # is followed by no LF: a bare CR in the line
        self._line_at = line
        new = held[max(line, start):]  # its bytes not looked at yet (a trickle costs one look)
        if not self._start_fits(new[:-1] if new.endswith(b"\r") else new):
            return self._pass()
        return b""

    def _fits(self, line: bytes | bytearray) -> bool:
        """Whether a whole held header line (without its CRLF) is one the parser may take:
        a token name, a colon, a value without control bytes, and a Content-Length the first
        one's number (a folded line is the parser's to judge: passed on)."""
        m = _WHOLE_LINE.fullmatch(line)
        if m is None:
            return False
        if m[1].lower() == b"content-length":
            value = m[2].strip(b" \t")
            if not value.isdigit() or self._length not in (None, value):
                return False
            self._length = bytes(value)
        return True

    def _start_fits(self, more: bytes | bytearray) -> bool:
        """Whether the unfinished line, `more` its newest bytes, may still become one the
        parser takes (name bytes tokens up to a colon, value bytes no control bytes)."""
        if not self._in_value:
            name, colon, more = more.partition(b":")
            if not _NAME_PART.fullmatch(name):
                return False
            self._in_value = bool(colon)
        return not _VALUE_BAD.search(more)

    def _pass(self) -> bytes:
        """The held part, now: the parser refuses it as it comes (the blank line this hold
        waits for may never come), and the rest of the head goes to it as it comes too."""
        held = bytes(self._held or b"")
        self.reset()
        self._passing = True
        return held


class CappedHandler(RequestHandler):
    """aiohttp's connection handler, holding every request head to `max_bytes` (then
    writing `refusal()`, a whole HTTP answer, and closing) and to `head_timeout_s`.

    A chunk is counted when it arrives while no request body is pending; the count restarts
    with each request whose head completes. The chunk in which a body ends is not counted
    (it may hold the next head's start): the cap holds within one read of the socket."""

    __slots__ = ("_dropped", "_head_bytes", "_head_timeout_s", "_hold", "_last_payload",
                 "_malformed", "_max_bytes", "_refusal", "_seen")

    def __init__(self, *args: Any, head_timeout_s: float, max_bytes: int,
                 refusal: Callable[[], bytes], malformed: Malformed = plain_malformed,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timeout_s = head_timeout_s
        self._max_bytes = max_bytes
        self._refusal = refusal
        self._malformed = malformed
        self._head_bytes = 0
        self._last_payload: Any = None
        self._seen = 0
        self._dropped = -1  # bytes read and dropped since the refusal (-1: none yet)
        self._hold = HeadHold()  # the head's part the parser may not have yet

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._dropped >= 0:  # refused: read, drop, close past the bound
            self._dropped += len(data)
            if self._dropped > DROP_BYTES and self.transport is not None:
                self.transport.close()
            return
        between = self._last_payload is None or self._last_payload.is_eof()
        fed = self._hold.feed(data) if between else data  # `data` begins/continues a head
        if fed or not data:  # aiohttp calls with b"" itself to re-parse what it buffered
            super().data_received(fed)  # while reading was paused: that call must reach it
        # the pending body's framing broke (a body that ended in this read is whole: an
        # error after it is the next request's own, answered 400 as aiohttp queued it)
        if (not between and not self._last_payload.is_eof() and self._messages
                and isinstance(self._messages[-1][0], _ErrInfo)):
            self._body_refused()
            return
        if self._request_count != self._seen:  # a head completed in this chunk
            self._seen = self._request_count
            self._hold.reset()
            self._head_bytes = 0
            self._last_payload = self._messages[-1][1] if self._messages else None
            return
        if not between or not data:
            return
        if not self._head_bytes and self._request_count:
            self._arm()  # the next request's head begins
        self._head_bytes += len(data)
        if self._head_bytes > self._max_bytes:
            self._refuse()

    def handle_error(self, request: web.BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """A head the parser refused: the listener's `malformed` answer and one log line
        (aiohttp's own is plain text and a traceback); any other error as aiohttp does."""
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        # non-HTTP bytes (TLS to a plain port) on a first request: routine on any port
        level = (logging.DEBUG if self._request_count == 1 and isinstance(exc, BadHttpMethod)
                 else logging.WARNING)
        log.log(level, "refused an unparsable request from %s: %s", request.remote,
                parse_error_summary(exc))
        if request.writer.output_size > 0:  # as aiohttp: an answer already began
            raise ConnectionError("an answer was already sent on this connection")
        resp = self._malformed(exc)
        resp.force_close()
        return resp

    def _body_refused(self) -> None:
        """The parser refused the pending body's framing (in a read after its head): the
        error goes to that body's stream, where its handler reads, instead of waiting as a
        request of its own; nothing more is read as requests from this connection."""
        err, _ = self._messages.pop()
        self._request_count -= 1
        if self._current_request is None:
            # answered already (before its body was read): only aiohttp's linger reads the
            # stream now, and an error there is an ERROR traceback quoting the client's bytes
            log.warning("refused a lingering request body with broken framing: %s",
                        parse_error_summary(err.exc) if isinstance(
                            err.exc, HttpProcessingError) else "framing error")
            self._last_payload.feed_eof()
            self.force_close()
            return
        set_exception(self._last_payload, RequestPayloadError(str(err.message)), err.exc)
        self.close()

    def _arm(self) -> None:
        self._loop.call_later(self._head_timeout_s, self._late, self._request_count)

    def _late(self, count: int) -> None:
        """The head armed for at `count` requests is not complete in time: close, unless a
        request is still being answered (then look again a period later)."""
        transport = self.transport
        if self._request_count != count or transport is None or transport.is_closing():
            return
        if self._request_in_progress or self._messages:
            self._arm()
            return
        transport.close()

    def _refuse(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self._request_in_progress or self._messages:
            self.force_close()  # no refusal: it would cut into the answer being written
            return
        transport.write(self._refusal())
        if transport.can_write_eof():
            transport.write_eof()  # the answer is whole: the client may close
        self._dropped = 0  # aiohttp's handler waits on; the client's close ends it
        self._loop.call_later(DROP_S, transport.close)


def capped_handler(server: web.Server, head_timeout_s: float, max_bytes: int,
                   refusal: Callable[[], bytes],
                   malformed: Malformed = plain_malformed) -> RequestHandler:
    """A `CappedHandler` made as `server()` makes aiohttp's own (its handler arguments)."""
    return CappedHandler(server, loop=server._loop, head_timeout_s=head_timeout_s,
                         max_bytes=max_bytes, refusal=refusal, malformed=malformed,
                         **server._kwargs)
