"""Response headers S3 sends in ISO-8859-1: the `response-*` overrides of GET/HEAD.

S3 writes an override's value as ISO-8859-1 bytes (it refuses a value that set cannot
hold: 400 "Header value cannot be represented using ISO-8859-1.", the error dataverse#4524
and grid#1716 quote), so "ü" leaves as the byte 0xFC and an HTTP client, which reads a
header's bytes as ISO-8859-1 (Python's http.client, hence boto3), reads "ü" back. aiohttp
serialises every header as UTF-8 (0xC3 0xBC, read back as "Ã¼"): for the named headers
the serialised head is rewritten, line by line, before it leaves. This leans on aiohttp's
writer keeping the head in `_headers_buf` until it is sent (as gateway/s3/sendbody.py
does; aiohttp is pinned to a tested minor in pyproject.toml).
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web


def send_as_latin1(request: web.BaseRequest, headers: Mapping[str, str]) -> None:
    """Have the response head of `request` carry these header lines (values ISO-8859-1
    encodable, checked by the caller) as ISO-8859-1 bytes. Call before the response is
    prepared; values that are ASCII need nothing and are skipped."""
    lines = {(f"{k}: {v}".encode(), f"{k}: {v}".encode("latin-1"))
             for k, v in headers.items() if not v.isascii()}
    writer = request.writer
    if not lines or writer is None:
        return
    write_headers = writer.write_headers

    async def latin1_write_headers(status_line, all_headers) -> None:  # type: ignore[no-untyped-def]
        await write_headers(status_line, all_headers)
        head = getattr(writer, "_headers_buf", None)
        if isinstance(head, bytes):
            for utf8, latin1 in lines:
                head = head.replace(b"\r\n" + utf8 + b"\r\n", b"\r\n" + latin1 + b"\r\n", 1)
            writer._headers_buf = head  # type: ignore[attr-defined]

    writer.write_headers = latin1_write_headers  # type: ignore[method-assign]
