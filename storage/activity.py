"""Client activity of this process: S3 requests in flight and done in the last second.

The gateway's request handler records every client request here (`begin`/`end`); background
work in the same process (repair, rebalancing, through `storage/throttle.py`) reads `busy()`
to give way to clients. Counting is a few integer updates per request: no locks (one event
loop), no history beyond the current and previous one-second windows.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from storage.sharedmap import map_shared

QUIET_S = 1.0  # clients count as active until this long after their last request ended


@dataclass(frozen=True)
class ActivitySnapshot:
    in_flight: int  # client requests being served now
    requests_last_s: int  # requests finished in the last one-second window
    bytes_last_s: int  # request + response body bytes of those requests
    busy: bool


class ClientActivity:
    """A process-wide, cheap record of client requests (see the module docstring)."""

    def __init__(self, quiet_s: float = QUIET_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.quiet_s = quiet_s
        self._clock = clock
        self.in_flight = 0
        self._last = float("-inf")  # when the last request began or ended
        self._window = 0  # index of the current one-second window
        self._reqs = [0, 0]  # [previous, current] window
        self._bytes = [0, 0]
        self.shared: SharedActivity | None = None  # the other gateway worker processes'

    def share(self, shared: SharedActivity) -> None:
        """Publish this process's activity in `shared` and count the other processes' there
        too (gateway workers: background work runs in one of them, clients reach all)."""
        self.shared = shared

    def begin(self) -> None:
        """A client request arrived."""
        self.in_flight += 1
        self._last = self._clock()
        if self.shared is not None:
            self.shared.publish(self._last, self.in_flight)

    def end(self, nbytes: int = 0) -> None:
        """A client request finished, having moved `nbytes` of bodies."""
        self.in_flight = max(0, self.in_flight - 1)
        now = self._last = self._clock()
        if self.shared is not None:
            self.shared.publish(now, self.in_flight)
        self._roll(now)
        self._reqs[1] += 1
        self._bytes[1] += max(0, nbytes)

    def busy(self) -> bool:
        """True while a request is in flight or one ended less than `quiet_s` ago."""
        now = self._clock()
        return (self.in_flight > 0 or now - self._last < self.quiet_s
                or (self.shared is not None and self.shared.others_busy(now, self.quiet_s)))

    def snapshot(self) -> ActivitySnapshot:
        """Current figures: in flight now, finished in the last completed second."""
        self._roll(self._clock())
        return ActivitySnapshot(in_flight=self.in_flight, requests_last_s=self._reqs[0],
                                bytes_last_s=self._bytes[0], busy=self.busy())

    def _roll(self, now: float) -> None:
        w = int(now)
        if w == self._window:
            return
        if w == self._window + 1:
            self._reqs, self._bytes = [self._reqs[1], 0], [self._bytes[1], 0]
        else:  # a quiet gap of more than a window: nothing recent
            self._reqs, self._bytes = [0, 0], [0, 0]
        self._window = w


class SharedActivity:
    """One slot per gateway worker process in a small shared file: when its clients were
    last active (CLOCK_MONOTONIC, the same in every process) and its requests in flight."""

    _SLOT = struct.Struct("<dq")

    def __init__(self, path: str | os.PathLike[str], slot: int, slots: int) -> None:
        self.slot = slot
        self.slots = slots
        size = self._SLOT.size * slots
        fd, self._map = map_shared(path, size)
        os.close(fd)

    def publish(self, last: float, in_flight: int) -> None:
        self._SLOT.pack_into(self._map, self.slot * self._SLOT.size, last, in_flight)

    def others_busy(self, now: float, quiet_s: float) -> bool:
        for i in range(self.slots):
            if i != self.slot:
                last, in_flight = self._SLOT.unpack_from(self._map, i * self._SLOT.size)
                if in_flight > 0 or (last > 0 and now - last < quiet_s):
                    return True
        return False


CLIENTS = ClientActivity()  # this process's clients (the gateway records, workers read)

__all__ = ["CLIENTS", "QUIET_S", "ActivitySnapshot", "ClientActivity", "SharedActivity"]
