"""The admin audit log's entries: a caller's text is written capped, so an unauthenticated
refusal cannot make each fsynced entry as large as a request line."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from gateway.admin.audit import MAX_FIELD, AuditLog


def _entries(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_long_route_parameter_is_written_capped(tmp_path: Path) -> None:
    """Route parameters of a refused request are the caller's: 8,000 characters (control
    characters, six bytes each once escaped) went whole into one entry. Short names are
    written exactly."""
    log = AuditLog(tmp_path / "audit" / "audit.log")
    try:
        long = "\x01" * 8000
        asyncio.run(log.record("anonymous", "tenant.show", "denied:MissingSecurityHeader",
                               {"name": long, "volume": "v1", "size": 5}, "127.0.0.1"))
    finally:
        log.close()
    assert log.path.stat().st_size < 6 * MAX_FIELD + 300
    (e,) = _entries(log.path)
    assert e["name"] == long[:MAX_FIELD] + "...[8000 chars]"
    assert e["volume"] == "v1" and e["size"] == 5
