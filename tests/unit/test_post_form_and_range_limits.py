"""Request limits that must not refuse what AWS accepts.

A POST form's pre-data is AWS's 20,480 bytes of the form before the file; a form under it
(as boto3's `generate_presigned_post` with `requests` builds one) must be read, one over it
refused. A byte range whose last position is below its first is syntactically invalid and
ignored (the whole object), however many digits its numbers have."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import streams
from aiohttp.base_protocol import BaseProtocol
from aiohttp.test_utils import make_mocked_request

from gateway.s3.errors import S3Error
from gateway.s3.http import parse_range
from gateway.s3.post_upload import PRE_DATA_MAX, _read_fields

BOUNDARY = "0123456789abcdef0123456789abcdef"  # as `requests` makes them: 32 hex digits


def _form(fields: int, value_bytes: int) -> tuple[bytes, int]:
    """A multipart form of `fields` fields then a file; (body, bytes before the file)."""
    pre = b"".join(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="x-amz-meta-k{i:03d}"\r\n\r\n'
        .encode() + b"v" * value_bytes + b"\r\n" for i in range(fields))
    file = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n'
            f"\r\ndata\r\n--{BOUNDARY}--\r\n").encode()
    return pre + file, len(pre)


async def _read(body: bytes) -> dict[str, str]:
    loop = asyncio.get_running_loop()
    payload = streams.StreamReader(BaseProtocol(loop), 2 ** 16, loop=loop)
    payload.feed_data(body)
    payload.feed_eof()
    req = make_mocked_request(
        "POST", "/bucket", payload=payload,
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
                 "Content-Length": str(len(body))})
    fields, _part, _name = await _read_fields(req)
    return fields


async def test_form_under_the_pre_data_limit_is_read() -> None:
    body, pre = _form(107, 90)
    assert pre < PRE_DATA_MAX  # 19,902 bytes before the file: AWS reads this form
    assert len(await _read(body)) == 107


async def test_form_over_the_pre_data_limit_is_refused() -> None:
    body, pre = _form(107, 96)
    assert pre > PRE_DATA_MAX  # 20,544
    with pytest.raises(S3Error) as err:
        await _read(body)
    assert err.value.code == "MaxPostPreDataLengthExceeded"  # as AWS sends it
    assert err.value.extra == {"MaxPostPreDataLengthBytes": "20480"}


def test_range_with_last_below_first_is_ignored_past_forty_digits() -> None:
    assert parse_range("bytes=5-3", 4096) is None
    assert parse_range("bytes=" + "9" * 50 + "-" + "9" * 45, 4096) is None
