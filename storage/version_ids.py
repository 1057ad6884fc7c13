"""Version ids and the sort key that lists a key's versions newest first.

A version id made here says when it was made: base64url of 8 bytes of the clock (ns), 10
random bytes and 6 bytes of a digest of those 18 (so an id of older releases, 32 random
characters, is told apart: it passes by chance once in 2**48). A version is listed at its
commit time, at or after that, so a ListObjectVersions page that resumes from a version-id
marker finds the marker's place among its key's versions from the id alone: in a few reads,
and even when that version was deleted between the pages (storage/listing.py).
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time

# What new_version_id makes (32 characters of the URL-safe alphabet), or "null"; the form
# every version id has had since the first release.
_VERSION_ID = re.compile(r"null|[A-Za-z0-9_-]{32}")


def _digest(raw: bytes) -> bytes:
    return hashlib.blake2b(raw, digest_size=6).digest()


def new_version_id(now_ns: int | None = None) -> str:
    """32 URL-safe characters, never starting with '-' (a command line reads such a value as
    an option: `aws s3api get-object --version-id -gtQ...` failed, one id in 64 did): the
    clock's first character is 'G' or later until the year 2262."""
    ts = time.time_ns() if now_ns is None else now_ns
    raw = ts.to_bytes(8, "big") + secrets.token_bytes(10)
    return base64.urlsafe_b64encode(raw + _digest(raw)).decode()


def made_at(version_id: str) -> int | None:
    """When `version_id` was made (ns), if new_version_id made it; None for "null" and the
    random ids of older releases."""
    if len(version_id) != 32:
        return None
    try:
        raw = base64.urlsafe_b64decode(version_id)
    except ValueError:
        return None
    if _digest(raw[:18]) != raw[18:]:
        return None
    return int.from_bytes(raw[:8], "big")


def version_sort(ts_ns: int, version_id: str) -> str:
    """Sort key putting the newest version first."""
    return f"{(1 << 64) - ts_ns:020d}.{version_id}"


def commit_sort(version_id: str, after_ns: int = 0) -> str:
    """Sort key of a version committed now: listed at its commit time, never before its id's
    time (the clock may step back between making the id and committing), so a page resuming
    from it as a marker finds it among the versions committed since its id was made; and
    always after `after_ns`, the time the key's newest version is listed at: a version is
    newer than every version committed before it even when this process's clock is behind
    the one that listed those (another gateway's, or this one's before it stepped back).
    Otherwise it was listed below them, ListObjectVersions called the older one latest, and
    deleting the current version made the older one current again: an older body, or a
    deleted key, came back."""
    return version_sort(max(time.time_ns(), made_at(version_id) or 0, after_ns + 1),
                        version_id)


def sorted_at(vsort: str) -> int:
    """The time (ns) `vsort` (a version_sort key) lists its version at."""
    return (1 << 64) - int(vsort.split(".", 1)[0])


def well_formed_version_id(version_id: str) -> bool:
    """Whether `version_id` could name a version here (S3 answers a malformed one 400
    InvalidArgument, a well-formed one that names nothing 404 NoSuchVersion)."""
    return _VERSION_ID.fullmatch(version_id) is not None
