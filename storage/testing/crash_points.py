"""Test hook: the process kills itself (SIGKILL) at a named point of an object commit or a
volume barrier, so an integration test can crash a real gateway or block daemon exactly
between two steps instead of racing it (tests/integration/test_crash_points.py,
test_volume_torn_pages.py).

$TESSERA_TEST_DIE_AT=POINT:PREFIX, POINT one of
- `before-commit`: the version's shards are written, its commit transaction not sent;
- `after-commit`: the commit transaction applied, the answer not yet given;
for commits (PUT, CopyObject, CompleteMultipartUpload, POST upload) of keys starting with
PREFIX only;
- `volume-after-append`: a block daemon's barrier (fsync or background append) committed
journal segment / direct extents SEQ of volume NAME, not yet answered; key `NAME/SEQ/`.
Read once at import; without the variable `die_at` is one comparison.
"""

from __future__ import annotations

import os
import signal

ENV = "TESSERA_TEST_DIE_AT"
POINTS = ("before-commit", "after-commit", "volume-after-append")


def _parse(value: str) -> tuple[str, str] | None:
    point, sep, prefix = value.partition(":")
    if not sep or point not in POINTS or not prefix:
        return None
    return point, prefix


_AT = _parse(os.environ.get(ENV, ""))


def die_at(point: str, key: str) -> None:
    """SIGKILL this process if the environment names `point` and `key` is under its prefix."""
    if _AT is not None and _AT[0] == point and key.startswith(_AT[1]):
        os.kill(os.getpid(), signal.SIGKILL)
