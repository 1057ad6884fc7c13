"""Test hooks that hold a lifecycle pass at a known point, so that a test can kill the process
doing it provably mid-way instead of racing a pass a fast (or slow) machine finishes first
(tests/integration/test_archive_chaos.py).

- $TESSERA_TEST_LIFECYCLE_HOLD=PATH: `tessera lifecycle run-once` holds after its first
  transition (the version moved and relabelled).
- $TESSERA_TEST_SWAP_HOLD=PATH: the gateway's lifecycle worker holds inside its first
  transition, with the new copy written and the manifest not yet swapped.

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

_in_transition: ContextVar[bool] = ContextVar("in_transition", default=False)


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


def hold_before_first_swap(archive: ArchiveService, release: Path) -> None:
    """Wrap `archive.transition` and `archive.mutate`: the first transition holds when it
    comes to swap its manifest (its new copy written). Only a mutate in a transition's own
    task holds (a context variable), never a restore's or an S3 request's."""
    move, mutate = archive.transition, archive.mutate
    held = False

    async def transition(v: Any, storage_class: str) -> bool:
        token = _in_transition.set(True)
        try:
            return await move(v, storage_class)
        finally:
            _in_transition.reset(token)

    async def swap(*args: Any, **kwargs: Any) -> Any:
        nonlocal held
        if _in_transition.get() and not held:
            held = True
            await hold(release)
        return await mutate(*args, **kwargs)

    archive.transition = transition  # type: ignore[method-assign]
    archive.mutate = swap  # type: ignore[method-assign]


def install_from_env(archive: ArchiveService, *, gateway: bool) -> None:
    """Apply the hook this process's environment asks for: the swap hold in a gateway, the
    after-first-transition hold in `tessera lifecycle run-once`."""
    if gateway:
        if path := os.environ.get(SWAP_HOLD_ENV):
            hold_before_first_swap(archive, Path(path))
    elif path := os.environ.get(HOLD_ENV):
        hold_after_first_transition(archive, Path(path))
