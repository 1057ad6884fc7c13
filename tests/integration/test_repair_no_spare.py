"""Repair with no spare source must not copy a liar nobody has named yet (real processes).

A keyless rebuild reads k+1 sources when it can and refuses (`SourcesDisagree`) when they
are not one codeword. With m shards lost only k sources remain: there is no spare to compare
with, and a lying source (valid checksums, wrong bytes) went straight into the rebuilt
shards. Those were committed, so every shard of the stripe then agreed on a codeword that
does not authenticate, and the lost shards' nodes, once back, held only stale copies: an
object that would have read back after their return was destroyed by repair. A rebuild
from k sources is now checked against the object's key, segment by segment.
"""

from __future__ import annotations

import random
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from ops.admincli import admin_request
from storage.config import load_config
from storage.shards.ids import shard_id
from storage.testing.lies import lie_about
from tests.held_shards import HeldShard
from tests.integration.cluster import LocalCluster, stop_processes, wait_for

# The sweep runs once at the start and then only when a node returns or restarts, and a
# down node's shards count as lost at once: the test decides when repair first looks at
# the stripe (both dead nodes already lost then, so it sees exactly k sources). No deep
# scrub: only repair may meet the lie here.
FAST = {"TESSERA_REPAIR_SWEEP_S": "3600", "TESSERA_REPAIR_DOWN_GRACE_S": "0",
        "TESSERA_ORPHAN_GRACE_S": "3600", "TESSERA_SCRUB_PAUSE_S": "0.5",
        "TESSERA_DEEP_SCRUB_RATE_MBPS": "0"}
DEADLINE_S = 60.0
BUCKET = "nospare"
restarted: list[subprocess.Popen] = []


@pytest.fixture
def ns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A fresh cluster whose first sweep pass (the only one until a node restarts) is over."""
    with pytest.MonkeyPatch.context() as mp:
        for k, v in FAST.items():
            mp.setenv(k, v)
        c = LocalCluster(tmp_path_factory.mktemp("nospare") / "data").start()
    try:
        c.client().create_bucket(Bucket=BUCKET)
        wait_for(lambda: int(status(c)["repair"].get("sweep_passes", 0)) >= 1,
                 "the first sweep pass", DEADLINE_S)
        yield c
    finally:
        stop_processes(restarted)
        restarted.clear()
        c.stop()


def shard_path(c: LocalCluster, node: str, stripe_id: bytes, index: int) -> HeldShard:
    """The shard where the node reads it (packed record or file: `tests.held_shards`)."""
    return c.shard(node, shard_id(stripe_id, index))


def status(c: LocalCluster) -> dict[str, Any]:
    return admin_request("GET", "/status", env=c.env)


# 100,000 bytes + the 16-byte tag split into 4 blocks with no padding.
@pytest.mark.parametrize("size", [3 * 2**20 + 5, 100_000], ids=["stream", "whole"])
def test_rebuild_from_k_sources_never_copies_a_liar(ns: LocalCluster, size: int) -> None:
    c = ns
    s3 = c.client()
    key = f"obj-{size}"
    body = random.Random(size).randbytes(size)
    s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    part = c.manifest(BUCKET, key).parts[0]
    cfg = load_config(c.data / "tessera.toml").nodes
    zone = {n.id: n.zone for n in cfg}
    nodes = [str(n) for n in part.nodes]
    # Two shard holders die, in two zones (each zone then has a free node to take a
    # rebuilt shard); a third holder, in the remaining zone, lies about every segment.
    zones = sorted({zone[n] for n in nodes})
    dead = [next(n for n in nodes if zone[n] == z) for z in zones[:2]]
    liar = next(i for i, n in enumerate(nodes) if zone[n] == zones[2])
    # Encoding is deterministic: an honest rebuild writes the original file again.
    originals = [shard_path(c, n, part.stripe_id, i).read_bytes() for i, n in enumerate(nodes)]
    # The lie is in the first segment only: a full segment (an object's last one ends in
    # zero padding, which a keyless rebuild checks, so a lie there may show without a key).
    lie_about(shard_path(c, nodes[liar], part.stripe_id, liar), seed=size, segments=1)
    before = int(status(c)["repair"].get("sources_disagree", 0))
    for n in dead:
        c.kill(n)
    try:
        wait_for(lambda: all(r["state"] != "up" for r in status(c)["nodes"] if r["id"] in dead),
                 "the two nodes seen down", DEADLINE_S)
        # A restart of a node outside the stripe (not a target: its zone has no room)
        # starts the sweep that finds the stripe at k.
        bystander = next(n.id for n in cfg if zone[n.id] == zones[2] and
                         n.id not in nodes and n.role == "standard")
        c.kill(bystander)
        restarted.append(c.restart_node(bystander))
        # Repair meets the stripe at k: it either rebuilds (and commits) the two shards
        # from the four sources left, or refuses because they do not authenticate.
        wait_for(lambda: c.manifest(BUCKET, key).parts[0].nodes != part.nodes or
                 int(status(c)["repair"].get("sources_disagree", 0)) > before,
                 "repair to act on the stripe at k", DEADLINE_S)
        now = c.manifest(BUCKET, key).parts[0]
        for i, n in enumerate(now.nodes):
            if n != part.nodes[i]:
                assert shard_path(c, str(n), part.stripe_id, i).read_bytes() == originals[i], \
                    f"repair committed shard {i} rebuilt from a lying source"
    finally:
        restarted.extend(c.restart_node(n) for n in dead)
        wait_for(lambda: all(r["state"] == "up" for r in status(c)["nodes"]),
                 "every node up again", DEADLINE_S)
    # The dead nodes are back: five honest shards; the read names the liar and answers.
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == body

    def honest() -> bool:  # the liar rewritten: every shard the manifest names is original
        now = c.manifest(BUCKET, key).parts[0]
        return all(n and shard_path(c, n, part.stripe_id, i).exists() and
                   shard_path(c, n, part.stripe_id, i).read_bytes() == originals[i]
                   for i, n in enumerate(now.nodes))

    wait_for(honest, "repair to rewrite the liar", DEADLINE_S)
