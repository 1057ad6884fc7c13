"""Background workers: each is a `step()` function the runner calls in a loop."""

from __future__ import annotations

from enum import Enum
from typing import Protocol


class WorkerState(Enum):
    BUSY = "busy"  # did work; call again soon
    IDLE = "idle"  # nothing to do now


class Worker(Protocol):
    name: str

    async def step(self) -> WorkerState: ...
