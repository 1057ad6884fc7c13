"""storage.malloc: megabyte buffers freed and allocated again reuse heap pages (no page
faults), as the gateway and the nodes now do from their first line; glibc's defaults fault
every such buffer in afresh."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The data path's pattern: a few 1 MiB segments/frames and 256 KiB receive buffers alive
# at once, freed, allocated again. Prints the minor page faults of the second round.
CHURN = """
import os, resource, sys
from storage.malloc import tune_malloc
print(tune_malloc() if sys.argv[1] == "tuned" else "-")
def churn():
    for _ in range(40):
        held = [os.urandom(1) * (1 << 20) for _ in range(8)]
        held += [bytes(256 * 1024) for _ in range(8)]
        del held
churn()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
churn()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str, **env: str) -> tuple[str, int]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", CHURN, mode], cwd=ROOT, env={**clean, **env},
                         capture_output=True, text=True, timeout=60, check=True).stdout.split()
    return out[0], int(out[1])


def test_tuned_process_reuses_megabyte_buffers_without_page_faults() -> None:
    _, default = _faults("default")
    took, tuned = _faults("tuned")
    assert took == "True"
    # 40 rounds x 10 MiB: glibc's defaults fault in most of it (~90,000 faults here)
    assert default > 20_000
    assert tuned < default // 20


def test_glibc_environment_settings_win() -> None:
    """An operator's own MALLOC_*_ settings are kept (here: glibc's initial defaults)."""
    took, faults = _faults("tuned", MALLOC_MMAP_THRESHOLD_="131072",
                           MALLOC_TRIM_THRESHOLD_="131072")
    assert took == "False"
    assert faults > 20_000



def test_glibc_tunables_win_too() -> None:
    """The same settings made through GLIBC_TUNABLES (glibc's newer way) are kept as well."""
    took, faults = _faults("tuned", GLIBC_TUNABLES="glibc.malloc.mmap_threshold=131072:"
                           "glibc.malloc.trim_threshold=131072")
    assert took == "False"
    assert faults > 20_000


# A thread's 4 MiB block (below the mmap line: from an arena) while the main thread holds
# one too; glibc's malloc_stats (stderr) lists one "Arena N:" per arena in use.
ARENAS = """
import ctypes, sys, threading
from storage.malloc import tune_malloc
tune_malloc(arenas=1) if sys.argv[1] == "one" else tune_malloc()
held = [bytearray(4 << 20)]
t = threading.Thread(target=lambda: held.append(bytearray(4 << 20)))
t.start()
t.join()
ctypes.CDLL("libc.so.6").malloc_stats()
"""


def _arenas(mode: str, **env: str) -> int:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    err = subprocess.run([sys.executable, "-c", ARENAS, mode], cwd=ROOT, env={**clean, **env},
                         capture_output=True, text=True, timeout=60, check=True).stderr
    return sum(line.startswith("Arena ") for line in err.splitlines())


def test_one_arena_serves_every_thread() -> None:
    """The gateway's setting: a block freed on one thread is reused by the next allocation
    on any other (per-thread arenas each kept their own free megabytes)."""
    assert _arenas("default") >= 2
    assert _arenas("one") == 1
    assert _arenas("one", MALLOC_ARENA_MAX="4") >= 2  # an operator's own setting wins
