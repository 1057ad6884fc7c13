"""The admin listener's (admin API and web console: JSON) refusal of a request head over
`[gateway] max_header_bytes`, written by `storage.headguard` before any request exists, and
its answer to a head aiohttp's parser refuses."""

from __future__ import annotations

import json

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from storage.headguard import closing_answer, parse_error_summary


def too_large_answer(limit: int) -> bytes:
    """431 with the admin API's JSON error document (the connection closes)."""
    body = json.dumps({"error": {"code": "RequestHeaderSectionTooLarge",
                                 "message": f"request heads are at most {limit} bytes"}})
    return closing_answer(431, "application/json; charset=utf-8", body.encode())


def malformed_answer(exc: HttpProcessingError) -> web.StreamResponse:
    """400 with the admin API's JSON error document, saying what the parser refused."""
    return web.json_response({"error": {"code": "BadRequest",
                                        "message": parse_error_summary(exc)}}, status=400)
