"""The clock a lease, or any deadline another party counts too, is counted on here.

A holder stops using its lease once a TTL has passed since its last renewal *by its own
clock*; whoever takes the lease over waits that TTL by theirs. `time.monotonic()`
(CLOCK_MONOTONIC) stops while the system is suspended, so a holder resumed after a suspend
thought its lease as young as before it and answered from memory, or started a step, after
another process had taken the lease over. CLOCK_BOOTTIME counts the suspended time as well:
elapsed real time, the same on both sides.

Every lease's clock is `now()` read through this module (`leaseclock.now()`), so a test can
replace it to make the boot clock jump as a resume does.
"""

from __future__ import annotations

import time


def now() -> float:
    """Seconds on CLOCK_BOOTTIME (monotonic, and counting time spent suspended)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)
