"""A block volume keeps working, and loses nothing, when a whole zone dies mid-workload."""

from __future__ import annotations

import threading
from pathlib import Path

from tests.integration.test_volumes import (
    Vol,
    fresh_vol,  # noqa: F401 - fixture
    fsck_clean,
    pytestmark,  # noqa: F401 - same requirements (root, /dev/fuse)
    sync_tree,
    verify_tree,
    write_tree,
)

AZ1 = ("n1", "n2", "n3", "a1", "a2")


def test_zone_killed_during_write_workload(fresh_vol: Vol, tmp_path: Path) -> None:  # noqa: F811
    fresh_vol.run("create", "zonal", "--size", "256M")
    mnt = tmp_path / "mnt"
    fresh_vol.mount("zonal", mnt, "--fs", "ext4")
    before = write_tree(mnt, seed=21, files=20)
    sync_tree(mnt)
    sums: dict[str, str] = {}
    errors: list[BaseException] = []
    halfway = threading.Event()

    def workload() -> None:
        try:
            for seed in (22, 23, 24):
                sums.update(write_tree(mnt, seed=seed, files=15))
                sync_tree(mnt)
                halfway.set()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
            halfway.set()

    t = threading.Thread(target=workload)
    t.start()
    assert halfway.wait(240)
    for node in AZ1:
        fresh_vol.cluster.kill(node)
    t.join(300)
    assert not t.is_alive() and not errors, errors
    verify_tree(mnt, before)
    verify_tree(mnt, sums)
    fresh_vol.unmount(mnt)
    fresh_vol.mount("zonal", mnt, "--fs", "ext4")
    verify_tree(mnt, before)
    verify_tree(mnt, sums)
    fresh_vol.unmount(mnt)
    fsck_clean(fresh_vol, "zonal", tmp_path)
