"""How old a write's first shard may be when the write commits.

Shards are indexed (X/) only by the commit; until then the orphan sweep deletes any whose
file is older than `[repair] orphan_grace_s`. A write that commits later than that could
name swept shards, so it refuses to commit instead (its shards are left to the sweep).

Its age is counted on `leaseclock.now` (the boot clock), as the sweep, in another process
or on another host, counts real time: on CLOCK_MONOTONIC a gateway suspended mid-write
would resume with the write as young as before the suspend and commit shards the sweep
may have deleted meanwhile (review21d F7).
"""

from __future__ import annotations

from storage import leaseclock
from storage.errors import WriteExpired


def commit_limit_s(grace_s: float) -> float:
    """Seconds after its first shard a write may still commit: the grace less a margin
    (a shard's age is taken on its node's clock, which may run or be stepped apart from this
    host's boot clock) of 10%, at least 60 s for a grace of 10 min or more."""
    margin = 0.1 * grace_s if grace_s < 600 else max(0.1 * grace_s, 60.0)
    return grace_s - margin


class WriteAge:
    """Started when a write sends its first shard; `check` just before its commit."""

    def __init__(self, grace_s: float) -> None:
        self.started = leaseclock.now()
        self.limit_s = commit_limit_s(grace_s)

    def expired(self) -> bool:
        return leaseclock.now() - self.started > self.limit_s

    def check(self) -> None:
        """Raise WriteExpired if the first shard may already have been swept as an orphan."""
        if self.expired():
            raise WriteExpired(f"write took longer than {self.limit_s:.0f} s to commit")
