"""`Cluster` is where the background workers are built, over the same services the gateway
uses: the gateway's runner starts exactly what `Cluster.workers` returns."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from storage.cluster import Cluster
from storage.config import config_from_mapping
from storage.crypto.keys import FileRootKey
from storage.metadata.sqlite import SqliteStore
from storage.tenants import TenantService
from storage.testing.simnodes import SimNodes
from storage.workers.deepscrub import DeepScrubber
from storage.workers.repair import RepairWorker
from storage.workers.restore import RestoreWorker
from storage.workers.runner import start_workers


async def test_cluster_builds_every_worker_over_its_services(tmp_path: Path) -> None:
    nodes = [{"id": f"n{z}", "zone": f"az{z}", "address": f"127.0.{z}.1:1"} for z in (1, 2, 3)]
    cfg = config_from_mapping({"data_dir": str(tmp_path), "nodes": nodes,
                               "profiles": {"standard": {"k": 2, "m": 1}}}, tmp_path)
    meta = await SqliteStore.open(tmp_path / "meta.db")
    tenants = TenantService(meta, FileRootKey(tmp_path / "root.key"))
    await tenants.load()
    pool = ThreadPoolExecutor(1)
    cluster = Cluster.wire(cfg, meta, tenants, SimNodes(list(cfg.nodes)), pool, pool)
    try:
        workers = cluster.workers()
        names = [w.name for w in workers]
        assert sorted(names) == sorted({"gc", "repair", "rebalance", "deepscrub", "rewrap",
                                        "shred", "reclaim", "restore", "lifecycle", "access-log"})
        by_type = {type(w): w for w in workers}
        repair, scrub = by_type[RepairWorker], by_type[DeepScrubber]
        assert repair.verify_stripe == scrub.check_stripe  # wired to each other here
        assert by_type[RestoreWorker]._archive is cluster.archive  # the cluster's service
        runner = start_workers(cluster)
        try:
            assert sorted(t.get_name() for t in runner.tasks) == sorted(
                f"worker-{n}" for n in names)
        finally:
            await runner.stop()
    finally:
        await meta.close()
        pool.shutdown()
