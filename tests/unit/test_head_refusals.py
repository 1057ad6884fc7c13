"""The raw answers refusing a request head over the cap, written before any request exists
(`storage.headguard`): each listener's own kind, with the headers its answers carry."""

from __future__ import annotations

import json

from gateway.admin.headlimit import too_large_answer as admin_refusal
from gateway.s3.headlimit import too_large_answer as s3_refusal


def _parse(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    top, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = top.decode("latin-1").split("\r\n")
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines)}
    assert int(headers["content-length"]) == len(body) and headers["connection"] == "close"
    return int(status_line.split(" ")[1]), headers, body


def test_s3_refusal_carries_request_id_and_date() -> None:
    status, headers, body = _parse(s3_refusal(16384))
    assert status == 400 and headers["content-type"] == "application/xml"
    assert f"<RequestId>{headers['x-amz-request-id']}</RequestId>".encode() in body
    assert headers["x-amz-id-2"] == "tessera" and headers["date"].endswith(" GMT")
    assert b"<Code>RequestHeaderSectionTooLarge</Code>" in body


def test_admin_refusal_is_json() -> None:
    status, headers, body = _parse(admin_refusal(16384))
    assert status == 431 and headers["content-type"] == "application/json; charset=utf-8"
    assert json.loads(body)["error"]["code"] == "RequestHeaderSectionTooLarge"
    assert headers["date"].endswith(" GMT")
