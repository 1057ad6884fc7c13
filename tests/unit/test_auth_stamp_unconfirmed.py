"""An etcd auth stamp watch that never confirms made every request read the stamp from
etcd with nothing to show for it. Now such requests are counted, one warning line says so
(once per stretch, not per request), and the metrics and `tessera status` show the state.
The WatchedStamp is the real one; etcd is stood in by a counter and a watch stream that
never says it was created (a member that accepts the watch and never answers it)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace

import pytest

from gateway.metrics import Metrics
from ops.status import _render_auth_stamp
from storage.metadata import etcd_stamp
from storage.metadata.etcd_stamp import WatchedStamp


class _Etcd:
    def __init__(self) -> None:
        self.stamp = 7
        self.reads = 0
        self.created: Callable[[], None] | None = None
        self.confirm = asyncio.Event()

    async def read(self) -> int:
        self.reads += 1
        return self.stamp

    async def watch(self, on_created: Callable[[], None], _broken: Callable[[], None]
                    ) -> AsyncIterator[list[int]]:
        await self.confirm.wait()  # never set: the stream is never confirmed
        on_created()
        yield []
        await asyncio.Event().wait()


async def test_unconfirmed_watch_is_counted_warned_once_and_shown(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(etcd_stamp, "WARN_AFTER_S", 0.0)
    etcd = _Etcd()
    stamp = WatchedStamp(etcd.read, etcd.watch)
    metrics = Metrics()
    metrics.watch_auth_stamp(stamp.state)
    try:
        with caplog.at_level(logging.WARNING, logger="tessera.metadata.etcd"):
            for _ in range(5):
                assert await stamp.get() == 7
        warned = [r for r in caplog.records if "not confirmed" in r.getMessage()]
        assert len(warned) == 1, [r.getMessage() for r in caplog.records]
        state = stamp.state()
        assert state["confirmed"] is False and state["reads"] == 5 == etcd.reads
        assert state["state"] == "reading"
        text = metrics.render().decode()
        assert "tessera_auth_stamp_unconfirmed 1.0" in text
        assert "tessera_auth_stamp_reads_total 5.0" in text
        shown = "\n".join(_render_auth_stamp(state))
        assert "NOT confirmed" in shown and "5 requests read it" in shown

        etcd.confirm.set()  # the stream is confirmed at last: answered from memory again
        while not stamp.state()["confirmed"]:
            await asyncio.sleep(0)
        reads = etcd.reads
        assert await stamp.get() == 7 and etcd.reads == reads
        assert stamp.state()["reading_for_s"] is None
        assert "tessera_auth_stamp_unconfirmed 0.0" in metrics.render().decode()
        assert "watch confirmed" in "\n".join(_render_auth_stamp(stamp.state()))
    finally:
        await stamp.close()


async def test_an_idle_healthy_watch_is_not_reported_unconfirmed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Review 16a: a healthy watch on a worker no request used for IDLE_S (its checks stop,
    by design), or none used yet, is not "NOT confirmed: every request reads the stamp":
    nothing reads it. The gauge meant to find a watch that never confirms must not read 1
    for every idle worker (summed over SO_REUSEPORT workers it would be ~their count), and
    `tessera status` says idle."""
    etcd = _Etcd()
    etcd.confirm.set()  # a healthy member: the stream is confirmed at once
    stamp = WatchedStamp(etcd.read, etcd.watch)
    metrics = Metrics()
    metrics.watch_auth_stamp(stamp.state)

    def shown_idle() -> None:
        assert "tessera_auth_stamp_unconfirmed 0.0" in metrics.render().decode()
        state = stamp.state()
        line = "\n".join(_render_auth_stamp(state))
        assert "idle" in line and "NOT confirmed" not in line, line
        assert state["state"] == "idle" and state["reading_for_s"] is None, state

    try:
        shown_idle()  # a worker before its first request
        assert await stamp.get() == 7
        while not stamp.state()["confirmed"]:
            await asyncio.sleep(0)
        assert stamp.state()["state"] == "confirmed"
        later = etcd_stamp.time.monotonic() + etcd_stamp.IDLE_S + 1
        monkeypatch.setattr(etcd_stamp, "time", SimpleNamespace(monotonic=lambda: later))
        shown_idle()  # IDLE_S without a request: the checks paused
    finally:
        await stamp.close()
