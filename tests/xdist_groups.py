"""How the suite is split under pytest-xdist (`-n N --dist loadgroup`, `CI_WORKERS=N .ci/run`).

Each module's tests run on one worker, in order: a module's tests may build on each other
(a bucket an earlier test made) and a module-scoped cluster then starts once. The
block-volume modules (loop devices, FUSE and ext4 mounts; one compares the machine's loop
devices before and after) run together on one worker, one after another. Each worker picks
free ports (`ops.localports.free_port`) from its own slice of the range, so two workers
never start servers on one port. Serial runs are untouched. Kept apart from
tests/conftest.py so its test imports nothing heavy.

Groups are handed out longest first (`FIRST`, then by test count, as xdist orders them
itself): ordered by test count alone, the single-test modules of a minute or more
(test_linearizable_gateways) came last, where one worker ran them while the other idled.
"""

from __future__ import annotations

import collections
import os

import pytest

MACHINE_WIDE = frozenset({
    "test_admin_volumes.py", "test_block_fuse_threads.py", "test_volume_fencing.py",
    "test_volume_journal_crash.py", "test_volume_model.py", "test_volume_zone.py",
    "test_volumes.py",
})

# The groups of more than ~20 s on one worker of an idle CI box (`--durations` of the CI
# runs of sessions 20-22), about longest first, by module file name.
FIRST = (
    "block-volumes", "test_chaos.py", "test_many_part_retire.py", "test_retire_review19h.py",
    "test_linearizable_gateways.py", "test_archive.py", "test_gateways_members_killed.py",
    "test_archive_chaos.py", "test_archive_clock.py", "test_netns_zone_outage.py",
    "test_shred_reclaim.py", "test_archive_races.py", "test_killed_test_run.py",
    "test_lifecycle_model.py", "test_crash_points.py", "test_disk_full.py",
    "test_pacing_settings.py",
)


@pytest.hookimpl(tryfirst=True)  # before xdist names each test's group from its marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test with its xdist group (its module, or "block-volumes") and put the
    groups in the order they are to be handed out (`FIRST`, then most tests first); each
    group's tests keep their order."""
    if not getattr(config.option, "loadgroup", False):  # set in xdist's workers only
        return
    groups: dict[pytest.Item, str] = {}
    for item in items:
        group = "block-volumes" if item.path.name in MACHINE_WIDE else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))
        groups[item] = group
    count = collections.Counter(groups.values())
    rank = {g: FIRST.index(g.rsplit("/", 1)[-1]) for g in count if g.rsplit("/", 1)[-1] in FIRST}
    items.sort(key=lambda i: (rank.get(groups[i], len(FIRST)), -count[groups[i]]))  # stable


def pytest_configure(config: pytest.Config) -> None:
    """In xdist worker gwI of N: $TESSERA_FREE_PORTS = the I-th of N slices of the free-port
    range (16 ports kept free at the top of each, for servers on consecutive ports). The
    processes a test starts inherit it. In the controller of a `--dist loadgroup` run:
    groups handed out in the order the workers collected them (`FIRST`), not xdist's."""
    if getattr(config.option, "dist", "no") == "loadgroup":
        config.option.loadscopereorder = False
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 0)
    if not worker.startswith("gw") or count < 2:
        return
    from ops.localports import FREE_PORTS_ENV, free_port_range

    i = int(worker[2:])
    low, high = free_port_range()
    width = (high - low) // count
    os.environ[FREE_PORTS_ENV] = f"{low + i * width}-{low + (i + 1) * width - 16}"
