"""The length of a lifecycle "day", changeable on a running cluster.

The configured length is `[lifecycle] day_seconds` (0: the archive clock's `[archive]
day_seconds`). An operator, or a test suite, overrides it cluster-wide without a restart with
`tessera config set lifecycle.day_seconds N` (`tessera config unset ...` returns to the file's
value): the override is one record in the metadata store, so every gateway and its lifecycle
worker read the same day at once. The knob only shortens days (at most a real day, 86400 s).

The day drives what the worker does and when; the S3 headers that announce a date
(`x-amz-expiration`, `x-amz-abort-date`) keep AWS's calendar form whatever the knob says:
midnight UTC, N real days on (`REAL_DAY`), as S3 defines them and as Ceph's debug interval
leaves them. With a shortened day the worker acts long before the announced date.
"""

from __future__ import annotations

import msgpack

from storage.config import Config
from storage.keyspace import system_key
from storage.metadata import MetadataStore

DAY_SECONDS = "lifecycle.day_seconds"
RUNTIME_SETTINGS = (DAY_SECONDS,)  # what `tessera config set` may change
DAY_SECONDS_MIN = 0.1
REAL_DAY = 86400.0
DAY_SECONDS_MAX = REAL_DAY  # a test knob that accelerates; longer days have no use


class LifecycleClock:
    """The configured day length, unless the metadata store holds an override."""

    def __init__(self, meta: MetadataStore, cfg: Config) -> None:
        self._meta = meta
        self.configured = cfg.lifecycle.day_seconds or cfg.archive.day_seconds

    async def override(self) -> float | None:
        item = await self._meta.get(system_key(DAY_SECONDS))
        return None if item is None else float(msgpack.unpackb(item.value))

    async def day_seconds(self) -> float:
        """The day length in force now (one metadata read)."""
        o = await self.override()
        return self.configured if o is None else o

    async def set_day_seconds(self, value: float | None) -> None:
        """Override the day length cluster-wide; None removes the override."""
        key = system_key(DAY_SECONDS)
        if value is None:
            await self._meta.delete(key)
            return
        if not DAY_SECONDS_MIN <= value <= DAY_SECONDS_MAX:  # also refuses NaN
            raise ValueError(f"{DAY_SECONDS} must be between {DAY_SECONDS_MIN} and "
                             f"{DAY_SECONDS_MAX:g} s (a real day), got {value:g}")
        await self._meta.put(key, msgpack.packb(float(value)))
