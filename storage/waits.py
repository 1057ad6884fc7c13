"""Waiting for an asyncio.Event with a deadline, without losing a cancellation.

`asyncio.wait_for(event.wait(), t)` on Python 3.11 drops a cancellation that arrives just
as the event is set (it returns the finished inner result instead of raising), so a loop
being stopped carries on and whoever awaits its task waits forever. `asyncio.timeout` has
no such window. Every event-with-deadline wait goes through `wait_event`.
"""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Until `event` is set (True) or `timeout_s` passed (False); a cancellation always
    propagates."""
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        return False
    return True
