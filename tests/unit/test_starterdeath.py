"""$TESSERA_EXIT_WITH_PID: the callback fires when a named process exits, or at once if gone."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from storage.starterdeath import ENV, starters, watch_starters, with_starter


def test_with_starter_appends_once() -> None:
    assert with_starter(7, {}) == "7"
    assert with_starter(9, {ENV: "7"}) == "7,9"
    assert with_starter(7, {ENV: "7,9"}) == "7,9"
    assert starters({ENV: "7, 9"}) == [7, 9]


async def _fired_by(pids: str, monkeypatch: pytest.MonkeyPatch,
                    end: subprocess.Popen | None = None) -> None:
    monkeypatch.setenv(ENV, pids)
    fired = asyncio.Event()
    watch_starters(asyncio.get_running_loop(), fired.set)
    await asyncio.sleep(0)  # one loop turn: a live starter does not fire it
    assert not fired.is_set() or end is None
    if end is not None:
        assert end.stdin is not None
        end.stdin.close()  # the starter exits
    await asyncio.wait_for(fired.wait(), 30)


def test_fires_when_a_starter_exits(monkeypatch: pytest.MonkeyPatch) -> None:
    long_lived = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                                  stdin=subprocess.PIPE)
    ending = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                              stdin=subprocess.PIPE)
    try:
        asyncio.run(_fired_by(f"{long_lived.pid},{ending.pid}", monkeypatch, ending))
    finally:
        for p in (long_lived, ending):
            p.kill()
            p.wait()


def test_fires_at_once_when_a_starter_is_already_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # reaped: its pid names no process
    asyncio.run(_fired_by(str(gone.pid), monkeypatch))
