"""The admin listener's (admin API and web console: JSON) refusal of a request head over
`[gateway] max_header_bytes`, written by `storage.headguard` before any request exists."""

from __future__ import annotations

import json

from storage.headguard import closing_answer


def too_large_answer(limit: int) -> bytes:
    """431 with the admin API's JSON error document (the connection closes)."""
    body = json.dumps({"error": {"code": "RequestHeaderSectionTooLarge",
                                 "message": f"request heads are at most {limit} bytes"}})
    return closing_answer(431, "application/json; charset=utf-8", body.encode())
