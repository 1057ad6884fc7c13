"""The S3 side of the request head cap (`storage.headguard`, `[gateway] max_header_bytes`):
AWS's refusal, and the exact size of a complete head, checked in the S3 pipeline so that a
head over the cap is refused the same however its bytes were cut into socket reads; and
AWS's answer to a head aiohttp's parser refuses (`malformed_answer`)."""

from __future__ import annotations

import secrets

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong

from gateway.s3.errors import HOST_ID, S3Error, error_xml
from storage.headguard import closing_answer

PARSE_ERROR = "An error occurred when parsing the HTTP request."  # AWS's BadRequest message


def head_bytes(request: web.BaseRequest) -> int:
    """The size of the request's head as sent: its request line and header lines."""
    line = len(request.method) + len(request.raw_path) + len(" HTTP/1.1\r\n") + 1
    return line + sum(len(k) + len(v) + 4 for k, v in request.raw_headers) + 2


def too_large(limit: int) -> S3Error:
    """AWS's refusal of a head over `limit` bytes."""
    return S3Error("RequestHeaderSectionTooLarge", MaxSizeAllowed=str(limit))


def too_large_answer(limit: int) -> bytes:
    """The whole HTTP answer refusing a head over `limit` bytes (the connection closes),
    with the headers of every S3 answer (request id, Date)."""
    err = too_large(limit)
    rid = secrets.token_hex(8).upper()
    return closing_answer(err.status, "application/xml", error_xml(err, rid, HOST_ID),
                          [("x-amz-request-id", rid), ("x-amz-id-2", HOST_ID)])


def malformed_answer(exc: HttpProcessingError) -> web.StreamResponse:
    """AWS's answer to a request head the HTTP parser refused: a line over the parser's
    limit or more header lines than it takes is RequestHeaderSectionTooLarge, anything else
    (garbage, invalid header bytes, bad chunked framing) BadRequest; both 400 with the
    headers of every S3 answer."""
    too_many = "too many headers" in (exc.message or "").lower()
    err = (S3Error("RequestHeaderSectionTooLarge") if isinstance(exc, LineTooLong) or too_many
           else S3Error("BadRequest", PARSE_ERROR))
    rid = secrets.token_hex(8).upper()
    return web.Response(status=err.status, body=error_xml(err, rid, HOST_ID),
                        content_type="application/xml",
                        headers={"x-amz-request-id": rid, "x-amz-id-2": HOST_ID})
