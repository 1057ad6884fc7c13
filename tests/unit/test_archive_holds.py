"""The lifecycle test hooks (storage/testing/archive_holds.py): a hold comes where it says, once, and
only in the task it is for; without the environment nothing is wrapped."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from storage.testing.archive_holds import (
    HOLD_ENV,
    RESTORE_HOLD_ENV,
    SWAP_HOLD_ENV,
    hold_after_first_transition,
    hold_before_first_restore_commit,
    hold_before_first_swap,
    install_from_env,
)


class FakeArchive:
    """transition = copy, then mutate (the swap), as ArchiveService.transition does; a
    restore pass = for each job, copy, then mutate (the commit)."""

    def __init__(self) -> None:
        self.log: list[str] = []

    async def mutate(self, key: str) -> str:
        self.log.append(f"swap {key}")
        return key

    async def transition(self, v: Any, storage_class: str) -> bool:
        self.log.append(f"copy {v}")
        await self.mutate(v)
        return True

    async def complete_due_restores(self, jobs: tuple[str, ...] = ("r1", "r2")) -> int:
        for job in jobs:
            self.log.append(f"restore {job}")
            await self.mutate(job)
        return len(jobs)


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


async def test_restore_hold_holds_the_first_restore_before_its_commit(tmp_path: Path) -> None:
    a, release = FakeArchive(), tmp_path / "release"
    held = tmp_path / "release.held"
    hold_before_first_restore_commit(a, release)
    hold_before_first_swap(a, tmp_path / "other")  # both hooks installed: each its own step
    first = asyncio.create_task(a.complete_due_restores())
    await asyncio.wait_for(until(held.exists), 5)
    assert a.log == ["restore r1"]  # copied, not committed
    assert await a.mutate("s3") == "s3"  # another task's mutate does not hold
    assert not first.done()
    release.touch()
    assert await asyncio.wait_for(first, 5) == 2
    assert a.log == ["restore r1", "swap s3", "swap r1", "restore r2", "swap r2"]
    held.unlink()
    release.unlink()
    assert await asyncio.wait_for(a.complete_due_restores(), 5) == 2  # only the first holds
    assert not held.exists()
    assert not (tmp_path / "other.held").exists()  # no transition ran: no swap hold


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
    plain = (a.transition, a.mutate, a.complete_due_restores)

    def wrapped() -> tuple[bool, bool, bool]:
        return (a.transition != plain[0], a.mutate != plain[1],
                a.complete_due_restores != plain[2])

    for env in (HOLD_ENV, SWAP_HOLD_ENV, RESTORE_HOLD_ENV):
        monkeypatch.delenv(env, raising=False)
    install_from_env(a, gateway=gateway)
    assert wrapped() == (False, False, False)  # nothing asked: nothing wrapped
    others = (HOLD_ENV,) if gateway else (SWAP_HOLD_ENV, RESTORE_HOLD_ENV)
    for env in others:
        monkeypatch.setenv(env, str(tmp_path / "r"))
    install_from_env(a, gateway=gateway)
    assert wrapped() == (False, False, False)  # the other process's variables
    if gateway:
        monkeypatch.setenv(RESTORE_HOLD_ENV, str(tmp_path / "r"))
        install_from_env(a, gateway=True)
        assert wrapped() == (False, True, True)  # the restore hold alone
        monkeypatch.setenv(SWAP_HOLD_ENV, str(tmp_path / "r"))
    else:
        monkeypatch.setenv(HOLD_ENV, str(tmp_path / "r"))
    install_from_env(a, gateway=gateway)
    assert wrapped() == (True, gateway, gateway)
