"""packs21: a node's pack file lost while later packs exist (deleted by hand, a directory
entry gone) is damage: the restarted node says so in its health and metrics, and the
repair sweep finds the shards the pack held (the node answers 404 for them) and rebuilds
them, so the object stays whole; then the sweep clears the report (packs22)."""

from __future__ import annotations

import json
import os
import random
import urllib.request
from pathlib import Path

import pytest

from storage.shards.auth import sign
from storage.shards.ids import shard_id
from tests.integration.cluster import LocalCluster, stop_processes, wait_for
from tests.integration.test_membership import node_cli

FAST = {"TESSERA_REPAIR_SWEEP_S": "0.5", "TESSERA_REPAIR_DOWN_GRACE_S": "3600"}
SEAL = 64 * 1024  # each node's pack seals after a shard or two: several packs


def _health(c: LocalCluster, node: str) -> dict:
    access = c._node_access(node)
    assert access is not None
    url, secret = access
    req = urllib.request.Request(url + "/v1/health", headers=sign(secret, "GET", "/v1/health",
                                                                  node))
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def test_a_lost_pack_is_reported_and_its_shards_rebuilt(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in FAST.items():
        monkeypatch.setenv(k, v)
    c = LocalCluster(tmp_path / "data", first_config=lambda t: t.replace(
        "[packs]\n", f"[packs]\nseal_bytes = {SEAL}\n")).start()
    procs = []
    try:
        s3 = c.client()
        s3.create_bucket(Bucket="lost")
        bodies = {f"o{i}": random.Random(i).randbytes(300_000) for i in range(4)}
        for key, body in bodies.items():  # o0's shards in early packs, later ones after
            s3.put_object(Bucket="lost", Key=key, Body=body)
        (part,) = c.manifest("lost", "o0").parts
        # a node holding o0's shard and a later pack (one that got a later object's shard)
        node, sid, held = next(
            (str(n), sid, h) for i, n in enumerate(part.nodes) if n
            for sid in [shard_id(part.stripe_id, i)] for h in [c.shard(str(n), sid)]
            if h.packed and h.path != max((c.data / "nodes" / str(n) / "packs").glob("*.pack")))
        c.kill(node)
        os.unlink(held.path)  # lost while later packs exist
        procs.append(c.restart_node(node))
        health = _health(c, node)
        assert health["packs_missing"] == 1 and health["pack_damage"] >= 1, health
        assert health["packs_lost"] == [int(Path(held.path).stem, 16)], health
        wait_for(lambda: sid in c.listed(node), "repair to rebuild the lost pack's shard", 60)
        for key, body in bodies.items():
            assert s3.get_object(Bucket="lost", Key=key)["Body"].read() == body
        seq = health["packs_lost"][0]
        # packs22: once a whole sweep pass found nothing left to rebuild, the report clears
        wait_for(lambda: _health(c, node)["packs_lost"] == [], "the repaired loss to clear", 60)
        assert _health(c, node)["packs_missing"] == 0
        acked = node_cli(c, "lost-packs", node, "--ack", str(seq), "--json")  # nothing left
        assert acked.returncode == 0, acked
        assert json.loads(acked.stdout) == {"node": node, "acknowledged": [], "packs_lost": [],
                                           "packs_missing": 0}
    finally:
        stop_processes(procs)
        c.stop()
