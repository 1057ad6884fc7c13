"""Test hooks that hold a lifecycle pass at a known point, so that a test can kill the process
doing it provably mid-way instead of racing a pass a fast (or slow) machine finishes first
(tests/integration/test_archive_chaos.py).

- $TESSERA_TEST_LIFECYCLE_HOLD=PATH: `tessera lifecycle run-once` holds after its first
  transition (the version moved and relabelled).
- $TESSERA_TEST_SWAP_HOLD=PATH: the gateway's lifecycle worker holds inside its first
  transition, with the new copy written and the manifest not yet swapped.
- $TESSERA_TEST_RESTORE_HOLD=PATH: the gateway's restore worker holds inside its first
  restore, with the restored copy written and not yet committed to the version.

A hold writes PATH.held (this process's pid) and waits until PATH exists; while PATH exists
there is no hold (a process restarted after the kill passes through). Nothing else reads
these variables, and without them nothing is wrapped.
"""

from __future__ import annotations

import asyncio
import os
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from storage.archive import ArchiveService

HOLD_ENV = "TESSERA_TEST_LIFECYCLE_HOLD"
SWAP_HOLD_ENV = "TESSERA_TEST_SWAP_HOLD"
RESTORE_HOLD_ENV = "TESSERA_TEST_RESTORE_HOLD"

_inside: dict[str, ContextVar[bool]] = {
    step: ContextVar(f"in_{step}", default=False)
    for step in ("transition", "complete_due_restores")}


async def hold(release: Path) -> None:
    """Say so in `release`.held, then wait for `release` (no hold if it exists already)."""
    if release.exists():
        return
    release.with_name(release.name + ".held").write_text(f"{os.getpid()}\n")
    while not release.exists():
        await asyncio.sleep(0.05)


def hold_after_first_transition(archive: ArchiveService, release: Path) -> None:
    """Wrap `archive.transition`: the first call that moved a version holds before it
    returns."""
    move = archive.transition
    held = False

    async def transition(v: Any, storage_class: str) -> bool:
        nonlocal held
        moved = await move(v, storage_class)
        if moved and not held:
            held = True
            await hold(release)
        return moved

    archive.transition = transition  # type: ignore[method-assign]


def _hold_first_mutate_in(archive: ArchiveService, step: str, release: Path) -> None:
    """Wrap `archive.<step>` and `archive.mutate`: the first mutate made in a `step` call's
    own task holds (a context variable), never one of another task (an S3 request's, the
    other worker's)."""
    run, mutate, inside = getattr(archive, step), archive.mutate, _inside[step]
    held = False

    async def in_step(*args: Any, **kwargs: Any) -> Any:
        token = inside.set(True)
        try:
            return await run(*args, **kwargs)
        finally:
            inside.reset(token)

    async def swap(*args: Any, **kwargs: Any) -> Any:
        nonlocal held
        if inside.get() and not held:
            held = True
            await hold(release)
        return await mutate(*args, **kwargs)

    setattr(archive, step, in_step)
    archive.mutate = swap  # type: ignore[method-assign]


def hold_before_first_swap(archive: ArchiveService, release: Path) -> None:
    """The first transition holds when it comes to swap its manifest (its new copy
    written); a restore's or an S3 request's mutate does not."""
    _hold_first_mutate_in(archive, "transition", release)


def hold_before_first_restore_commit(archive: ArchiveService, release: Path) -> None:
    """The restore worker's first restore holds when it comes to commit its copy (written)
    to the version: its only mutate (`ArchiveService._complete`'s finish)."""
    _hold_first_mutate_in(archive, "complete_due_restores", release)


def install_from_env(archive: ArchiveService, *, gateway: bool) -> None:
    """Apply the hooks this process's environment asks for: the swap and restore holds in a
    gateway, the after-first-transition hold in `tessera lifecycle run-once`."""
    if gateway:
        if path := os.environ.get(SWAP_HOLD_ENV):
            hold_before_first_swap(archive, Path(path))
        if path := os.environ.get(RESTORE_HOLD_ENV):
            hold_before_first_restore_commit(archive, Path(path))
    elif path := os.environ.get(HOLD_ENV):
        hold_after_first_transition(archive, Path(path))
