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


def test_the_log_rotates_at_its_cap_and_keeps_its_backups(tmp_path: Path) -> None:
    """[audit] max_bytes and backups: no file grows past the cap (an entry that would pass
    it begins a new file), the newest `backups` rotated files are kept in order, older ones
    are deleted, and no entry is lost or split across files; a reopened log appends to the
    current file and rotates on from its size (lows18: the log grew without end)."""
    path = tmp_path / "audit" / "audit.log"
    cap, backups, n = 1000, 3, 100

    async def write(log: AuditLog, first: int, count: int) -> None:
        for i in range(first, first + count):
            await log.record("admin", "tenant.create", "ok", {"name": f"t{i:04d}"})

    log = AuditLog(path, max_bytes=cap, backups=backups)
    try:
        asyncio.run(write(log, 0, n // 2))
    finally:
        log.close()
    log = AuditLog(path, max_bytes=cap, backups=backups)  # a restart: same file, same cap
    try:
        asyncio.run(write(log, n // 2, n - n // 2))
    finally:
        log.close()
    files = [log.rotated(k) for k in range(backups, 0, -1)] + [path]  # oldest first
    assert all(f.exists() for f in files)
    assert not log.rotated(backups + 1).exists()
    assert all(0 < f.stat().st_size <= cap for f in files)
    names = [e["name"] for f in files for e in _entries(f)]
    assert names == [f"t{i:04d}" for i in range(n - len(names), n)]  # the newest, in order
    assert len(names) < n  # the oldest files were deleted
