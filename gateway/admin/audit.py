"""Append-only audit log of admin actions: one JSON line per action, fsynced.

Two files (`AuditTrail`): `audit.log` holds every request that got past its refusal (the
actions, and what they answered), `audit-refused.log` the refused ones (`denied:` results:
unauthenticated, unsigned, a wrong signature, not an admin key, a bad console session). Each
rotates by its own volume, so a flood of refused requests, which anyone can send, rotates
only the refused file and never deletes the record of a real admin action (review18c M2).

Each entry says who (access key id), what (action and target), when and the result. Request
bodies are never written whole: only fields named in `SAFE_FIELDS`, so no secret reaches it.
A refused request is written under the access key it claims only when that key was issued
(`refused_who`): a string that names no key is often a secret typed or configured in the
access key's place, as AWS CloudTrail writes HIDDEN_DUE_TO_SECURITY_REASONS for a console
sign-in whose user name does not exist.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from storage.telemetry import AUDIT_COUNTS

if TYPE_CHECKING:
    from storage.tenants import TenantService

SAFE_FIELDS = ("tenant", "name", "access_key", "wait_s", "version", "role", "volume", "snapshot",
               "size", "clone", "node", "zone", "address", "via", "key_id", "key", "state",
               # how a change was made, not a secret: a shred that bypasses governance
               # retention, the four Block Public Access flags, and a runtime setting's value
               # (`config set` accepts only numbers, for settings that are not secrets)
               "bypass_governance_retention", "public_access_block", "value",
               # `node remove --force`: what it abandons (counts), and whether it was the plan
               "force", "dry_run")

MAX_FIELD = 256  # characters of a string field written; a request names nothing longer that
# exists (names are at most 256), and an unauthenticated refusal's route parameters are the
# caller's text: uncapped, one 8 KB request line wrote 8-16 KB (control characters escape
# to six bytes) and fsynced it, an easy way to fill the disk without a key.
UNKNOWN_KEY = "unknown-key"  # who a refused request claiming no issued key is audited as
MAX_KEY_ID = 128  # longer claims are never looked up


async def refused_who(tenants: TenantService, claimed: str | None) -> str:
    """Who to audit a refused request as: "anonymous" when it claims no access key, the key
    when it was issued here (active or revoked), else UNKNOWN_KEY, never the claimed text."""
    if not claimed:
        return "anonymous"
    if len(claimed) <= MAX_KEY_ID and claimed.isascii() and await tenants.key_issued(claimed):
        return claimed
    return UNKNOWN_KEY


def capped(value: Any) -> Any:
    """A string field as written: at most MAX_FIELD characters, then how long it was."""
    if isinstance(value, str) and len(value) > MAX_FIELD:
        return f"{value[:MAX_FIELD]}...[{len(value)} chars]"
    return value


class AuditLog:
    """Appends entries to `<data_dir>/audit/audit.log` (O_APPEND, fsync per entry).

    Size-capped (`[audit]`): before an entry would take the file past `max_bytes` it becomes
    audit.log.1 (audit.log.N becomes N+1, the one past `backups` is deleted) and a new file
    begins, the renames made durable (the directory fsynced) before the entry is written.
    Entries were capped (MAX_FIELD) but the file grew without end. Several gateways may
    share one data directory (`tessera up --gateways N`): each write holds an flock on
    `audit.log.lock`, follows a rotation another process made (reopens the current file)
    and takes the size from the file itself."""

    def __init__(self, path: Path, max_bytes: int = 64 << 20, backups: int = 8,
                 kind: str = "actions") -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = path
        self.kind = kind  # the metrics label: "actions" or "refused"
        self.max_bytes = max_bytes
        self.backups = backups
        self._fd = self._open()
        self._lockfd = os.open(path.with_name(path.name + ".lock"),
                               os.O_RDWR | os.O_CREAT, 0o600)
        self._lock = asyncio.Lock()

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def rotated(self, n: int) -> Path:
        """The path of the n-th rotated file (1: the newest)."""
        return self.path.with_name(f"{self.path.name}.{n}")

    def files(self) -> list[Path]:
        """The current file, then the rotated ones kept, newest first."""
        return [self.path, *(self.rotated(n) for n in range(1, self.backups + 1))]

    def _rotate(self) -> None:
        os.close(self._fd)
        self.rotated(self.backups).unlink(missing_ok=True)
        for n in range(self.backups - 1, 0, -1):
            if self.rotated(n).exists():
                os.replace(self.rotated(n), self.rotated(n + 1))
        os.replace(self.path, self.rotated(1))
        self._fd = self._open()
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        AUDIT_COUNTS.add(f"{self.kind}_rotations")

    def _write(self, line: bytes) -> None:
        fcntl.flock(self._lockfd, fcntl.LOCK_EX)
        try:
            try:
                current = os.stat(self.path).st_ino == os.fstat(self._fd).st_ino
            except FileNotFoundError:
                current = False
            if not current:  # another gateway rotated it: append to the current file
                os.close(self._fd)
                self._fd = self._open()
            size = os.fstat(self._fd).st_size
            if size and size + len(line) > self.max_bytes:
                self._rotate()
            os.write(self._fd, line)
            os.fsync(self._fd)
        finally:
            fcntl.flock(self._lockfd, fcntl.LOCK_UN)

    async def record(self, who: str, action: str, result: str,
                     details: dict[str, Any] | None = None, remote: str | None = None) -> None:
        entry: dict[str, Any] = {"ts": round(time.time(), 3), "who": who, "action": action,
                                 "result": result}
        if remote:
            entry["remote"] = remote
        for k, v in (details or {}).items():
            if k in SAFE_FIELDS and v is not None:
                entry[k] = capped(v)
        line = (json.dumps(entry, separators=(",", ":"), sort_keys=True) + "\n").encode()
        async with self._lock:
            await asyncio.to_thread(self._write, line)
        AUDIT_COUNTS.add(f"{self.kind}_entries")

    def close(self) -> None:
        os.close(self._fd)
        os.close(self._lockfd)


REFUSED = "denied:"  # the result prefix of a refused request


class AuditTrail:
    """The admin audit: actions in `<dir>/audit.log`, refused requests in
    `<dir>/audit-refused.log`, each an `AuditLog` with its own cap and backups."""

    def __init__(self, directory: Path, max_bytes: int = 64 << 20, backups: int = 8,
                 refused_max_bytes: int = 16 << 20, refused_backups: int = 2) -> None:
        self.actions = AuditLog(directory / "audit.log", max_bytes, backups, "actions")
        self.refused = AuditLog(directory / "audit-refused.log", refused_max_bytes,
                                refused_backups, "refused")

    @property
    def paths(self) -> tuple[Path, Path]:
        """The two current files."""
        return self.actions.path, self.refused.path

    def files(self) -> dict[str, list[Path]]:
        """Each log's files, newest first (GET /admin/v1/audit lists both, merged by time)."""
        return {"audit": self.actions.files(), "refused": self.refused.files()}

    async def record(self, who: str, action: str, result: str,
                     details: dict[str, Any] | None = None, remote: str | None = None) -> None:
        """Write one entry to the refused file if `result` is a refusal, else the actions."""
        log = self.refused if result.startswith(REFUSED) else self.actions
        await log.record(who, action, result, details, remote)

    def close(self) -> None:
        self.actions.close()
        self.refused.close()
