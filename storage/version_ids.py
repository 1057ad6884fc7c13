"""Version ids and the sort key that lists a key's versions newest first."""

from __future__ import annotations

import re
import secrets

# What new_version_id makes (token_urlsafe(24): 32 characters of the URL-safe alphabet), or
# "null"; the form every version id has had since the first release.
_VERSION_ID = re.compile(r"null|[A-Za-z0-9_-]{32}")


def new_version_id() -> str:
    """32 URL-safe characters, never starting with '-': a command line reads such a value as
    an option (`aws s3api get-object --version-id -gtQ...` fails: one id in 64 did)."""
    while True:
        vid = secrets.token_urlsafe(24)
        if not vid.startswith("-"):
            return vid


def version_sort(ts_ns: int, version_id: str) -> str:
    """Sort key putting the newest version first."""
    return f"{(1 << 64) - ts_ns:020d}.{version_id}"


def well_formed_version_id(version_id: str) -> bool:
    """Whether `version_id` could name a version here (S3 answers a malformed one 400
    InvalidArgument, a well-formed one that names nothing 404 NoSuchVersion)."""
    return _VERSION_ID.fullmatch(version_id) is not None
