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


def test_two_gateways_sharing_a_data_dir_lose_no_entry_newer_than_the_oldest_kept(
        tmp_path: Path) -> None:
    """review18c: `tessera up --gateways 2` runs two gateways on one config, so two AuditLogs
    append to one audit.log. One's rotation renamed the file the other still held open; the
    other wrote on into audit.log.N and, once that was rotated out, into a deleted file:
    acknowledged entries newer than the oldest one kept were gone."""
    path = tmp_path / "audit" / "audit.log"
    logs = [AuditLog(path, max_bytes=4096, backups=2) for _ in range(2)]

    async def write() -> None:
        for i in range(200):
            for g, log in enumerate(logs):
                await log.record(f"gw{g}", "tenant.create", "ok", {"name": f"t{i:04d}"})

    try:
        asyncio.run(write())
    finally:
        for log in logs:
            log.close()
    kept = {(e["who"], int(e["name"][1:])) for f in path.parent.iterdir() for e in _entries(f)}
    oldest = min(i for _, i in kept)
    lost = [(g, i) for g in ("gw0", "gw1") for i in range(oldest + 1, 200)
            if (g, i) not in kept]
    assert not lost, f"{len(lost)} entries lost, first {lost[:3]}"


def test_refused_requests_rotate_their_own_file_and_are_counted(tmp_path: Path) -> None:
    """review18c M2: refused requests (results `denied:`) need no key. They go to
    audit-refused.log, capped and rotated on its own, so however many there are, the
    actions file keeps every action; both files' entries and rotations are counted."""
    from gateway.admin.audit import AuditTrail
    from storage.telemetry import AUDIT_COUNTS

    before = AUDIT_COUNTS.snapshot()
    trail = AuditTrail(tmp_path / "audit", max_bytes=4096, backups=1,
                       refused_max_bytes=4096, refused_backups=1)

    async def write() -> None:
        await trail.record("admin", "tenant.create", "ok", {"name": "kept"})
        for i in range(200):
            await trail.record("anonymous", "tenant.show", "denied:MissingAuthentication",
                               {"name": f"x{i}"}, "127.0.0.1")
        await trail.record("admin", "tenant.delete", "error:NoSuchTenant", {"name": "gone"})

    try:
        asyncio.run(write())
    finally:
        trail.close()
    actions = _entries(trail.actions.path)
    assert [(e["action"], e["result"]) for e in actions] == [
        ("tenant.create", "ok"), ("tenant.delete", "error:NoSuchTenant")]
    assert not trail.actions.rotated(1).exists()
    refused = _entries(trail.refused.path) + _entries(trail.refused.rotated(1))
    assert refused and all(e["result"].startswith("denied:") for e in refused)
    assert not trail.refused.rotated(2).exists()  # its own backups: older ones deleted
    after = AUDIT_COUNTS.snapshot()
    grew = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    assert grew["actions_entries"] == 2 and grew["refused_entries"] == 200
    assert grew["refused_rotations"] >= 4 and grew.get("actions_rotations", 0) == 0
