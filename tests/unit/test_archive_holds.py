"""The lifecycle test hooks (storage/testing/archive_holds.py): a hold comes where it says, once, and
only in the task it is for; without the environment nothing is wrapped."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from storage.testing.archive_holds import (
    HOLD_ENV,
    SWAP_HOLD_ENV,
    hold_after_first_transition,
    hold_before_first_swap,
    install_from_env,
)


class FakeArchive:
    """transition = copy, then mutate (the swap), as ArchiveService.transition does."""

    def __init__(self) -> None:
        self.log: list[str] = []

    async def mutate(self, key: str) -> str:
        self.log.append(f"swap {key}")
        return key

    async def transition(self, v: Any, storage_class: str) -> bool:
        self.log.append(f"copy {v}")
        await self.mutate(v)
        return True


async def until(cond: Any) -> None:
    while not cond():
        await asyncio.sleep(0.01)


async def test_swap_hold_holds_the_first_transition_before_its_swap(tmp_path: Path) -> None:
    a, release = FakeArchive(), tmp_path / "release"
    held = tmp_path / "release.held"
    hold_before_first_swap(a, release)
    first = asyncio.create_task(a.transition("v1", "GLACIER"))
    await asyncio.wait_for(until(held.exists), 5)
    assert a.log == ["copy v1"]  # copied, not swapped
    assert await a.mutate("restore") == "restore"  # another task's mutate does not hold
    assert not first.done()
    release.touch()
    assert await asyncio.wait_for(first, 5) is True
    assert a.log == ["copy v1", "swap restore", "swap v1"]
    held.unlink()
    release.unlink()
    assert await asyncio.wait_for(a.transition("v2", "GLACIER"), 5)  # only the first holds
    assert not held.exists()


async def test_no_hold_while_the_release_exists(tmp_path: Path) -> None:
    a, release = FakeArchive(), tmp_path / "release"
    release.touch()
    hold_before_first_swap(a, release)
    assert await asyncio.wait_for(a.transition("v1", "GLACIER"), 5)
    assert not (tmp_path / "release.held").exists()


async def test_run_once_hold_comes_after_the_first_transition(tmp_path: Path) -> None:
    a, release = FakeArchive(), tmp_path / "release"
    hold_after_first_transition(a, release)
    first = asyncio.create_task(a.transition("v1", "GLACIER"))
    await asyncio.wait_for(until((tmp_path / "release.held").exists), 5)
    assert a.log == ["copy v1", "swap v1"] and not first.done()
    release.touch()
    assert await asyncio.wait_for(first, 5)


@pytest.mark.parametrize("gateway", [True, False])
def test_install_reads_only_its_own_variable(gateway: bool, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    a = FakeArchive()
    plain = (a.transition, a.mutate)
    monkeypatch.delenv(HOLD_ENV, raising=False)
    monkeypatch.delenv(SWAP_HOLD_ENV, raising=False)
    install_from_env(a, gateway=gateway)
    assert (a.transition, a.mutate) == plain  # nothing asked: nothing wrapped
    monkeypatch.setenv(HOLD_ENV if gateway else SWAP_HOLD_ENV, str(tmp_path / "r"))
    install_from_env(a, gateway=gateway)
    assert (a.transition, a.mutate) == plain  # the other process's variable
    monkeypatch.setenv(SWAP_HOLD_ENV if gateway else HOLD_ENV, str(tmp_path / "r"))
    install_from_env(a, gateway=gateway)
    assert a.transition != plain[0]
    assert (a.mutate != plain[1]) is gateway
