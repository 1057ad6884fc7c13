"""Membership on real processes: drain, add (with rebalancing) and remove storage nodes.

Each test runs its own `tessera up` (fast repair sweep and rebalancer passes, set through the
environment its processes inherit) and drives membership with the `tessera node` CLI.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ops.admincli import admin_request
from storage.clusterstatus import fully_redundant
from storage.membership import WATCHED_REFRESH_S
from tests.integration.cluster import LocalCluster, free_port, stop_processes

FAST = {"TESSERA_REPAIR_SWEEP_S": "0.5", "TESSERA_REBALANCE_INTERVAL_S": "0.5",
        "TESSERA_REBALANCE_MIN_GAP_MB": "1", "TESSERA_ORPHAN_GRACE_S": "3600"}
DEADLINE_S = 60.0
NEW_HOST = "127.0.2.20"


@pytest.fixture
def members(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in FAST.items():
        monkeypatch.setenv(k, v)


@pytest.fixture
def mc(members: None, fresh_cluster: LocalCluster) -> Iterator[LocalCluster]:
    """fresh_cluster, started after `members` set the fast environment."""
    yield fresh_cluster


@pytest.fixture
def slow_gc(members: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TESSERA_GC_GRACE_S", "3600")


@pytest.fixture
def mc_slow_gc(slow_gc: None, fresh_cluster: LocalCluster) -> Iterator[LocalCluster]:
    """fresh_cluster with the fast environment whose collector waits an hour."""
    yield fresh_cluster


@pytest.fixture
def mc_stalled(members: None, stalled_env: None,
               fresh_cluster: LocalCluster) -> Iterator[LocalCluster]:
    """A fresh cluster whose rebalancer moves 1 byte a second: a drain never finishes."""
    yield fresh_cluster


@pytest.fixture
def stalled_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TESSERA_REBALANCE_RATE_MBPS", "TESSERA_REBALANCE_BUSY_RATE_MBPS"):
        monkeypatch.setenv(name, str(1 / (1 << 20)))


def node_cli(c: LocalCluster, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ops.cli", "node", *args],
                          env={**os.environ, **c.env}, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def node_rows(c: LocalCluster) -> dict[str, dict[str, Any]]:
    r = node_cli(c, "list", "--json")
    assert r.returncode == 0, r.stderr
    return {n["id"]: n for n in json.loads(r.stdout)["nodes"]}


def status(c: LocalCluster) -> dict[str, Any]:
    return admin_request("GET", "/status", env=c.env)


def wait(c: LocalCluster, what: str, cond: Callable[[], bool],
         timeout: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}; status: {status(c)}")


def put_objects(s3: Any, bucket: str, n: int, seed: int) -> dict[str, bytes]:
    rnd = random.Random(seed)
    data = {f"obj-{seed}-{i}": rnd.randbytes(rnd.randint(300_000, 2_500_000)) for i in range(n)}
    for key, body in data.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    return data


def check(s3: Any, bucket: str, data: dict[str, bytes]) -> None:
    for key, body in data.items():
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body, key


def assert_redundant(c: LocalCluster, stripes: int) -> None:
    """Every stripe at k+m shards on distinct nodes, zone-safe, confirmed by a full sweep."""
    since = time.time()
    wait(c, "full redundancy", lambda: fully_redundant(status(c), since))
    doc = status(c)
    assert doc["stripes"]["by_healthy_shards"] == {"6": stripes}
    assert doc["stripes"]["zone_unsafe"] == 0


def test_drain_moves_every_shard_then_remove(mc: LocalCluster) -> None:
    s3 = mc.client()
    s3.create_bucket(Bucket="members")
    data = put_objects(s3, "members", 10, seed=1)
    victim = "n1"
    held = len(mc.shard_files()[victim])
    assert held > 0
    for args in (("drain", "nope"), ("remove", "nope"),
                 ("add", "--id", "x1", "--zone", "az1", "--address", "127.0.1.30:1")):
        r = node_cli(mc, *args)  # errors are one plain line
        assert r.returncode == 1 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "NoSuchNode" in node_cli(mc, "drain", "nope").stderr
    r = node_cli(mc, "remove", victim)  # refused: the node holds shards
    assert r.returncode == 1 and "still holds" in r.stderr and "\n" not in r.stderr.strip()
    r = node_cli(mc, "drain", victim)
    assert r.returncode == 0, r.stderr
    assert "draining" in r.stdout
    # no new placement on a draining node
    during = put_objects(s3, "members", 4, seed=2)
    # --wait shows progress until the node holds nothing (moved copies collected too)
    r = node_cli(mc, "drain", victim, "--wait", "--timeout", str(2 * DEADLINE_S),
                 timeout=3 * DEADLINE_S)
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert lines[-1].startswith(f"node {victim}: drained, holds no shard"), r.stderr
    assert f"`tessera node remove {victim}`" in lines[-1]
    assert not mc.shard_files()[victim]
    row = node_rows(mc)[victim]
    assert row["membership"] == "draining" and row["drain"]["left"] == 0
    assert row["drain"]["moved"] > 0  # (repair may relocate some of the held shards itself)
    text = node_cli(mc, "list").stdout
    assert "drained" in text and "MEMBERSHIP" in text
    doc = status(mc)
    assert doc["rebalance"]["copied"] > 0 and doc["rebalance"]["failed"] == 0
    text = subprocess.run([sys.executable, "-m", "ops.cli", "status"], capture_output=True,
                          text=True, env={**os.environ, **mc.env}, timeout=60).stdout
    assert "REBALANCE" in text and f"draining {victim}: drained" in text
    check(s3, "members", data)
    check(s3, "members", during)
    assert_redundant(mc, len(data) + len(during))
    wait(mc, "the node to report no shards", lambda: node_rows(mc)[victim]["shards"] == 0)
    r = node_cli(mc, "remove", victim)
    assert r.returncode == 0, r.stderr
    assert victim not in node_rows(mc)
    after = put_objects(s3, "members", 3, seed=3)  # the cluster keeps working without it
    check(s3, "members", after)
    assert not mc.shard_files()[victim]
    assert "removed" in node_cli(mc, "list", "--all").stdout
    for args in (("remove", victim), ("remove", victim, "--force", "--yes")):
        r = node_cli(mc, *args)  # again: says nothing changed (--force crashed, newuser19)
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
        assert r.stdout.strip() == f"node {victim} was already removed from the cluster " \
            "map; nothing changed", r.stdout
    for args in (("activate", victim), ("drain", victim)):  # removal is final, and says so
        r = node_cli(mc, *args)
        assert r.returncode == 1 and "`tessera node add`" in r.stderr, r.stderr
    audit = [json.loads(line) for line in
             (mc.data / "audit" / "audit.log").read_text().splitlines()]
    acted = {(e["action"], e.get("node"), e["result"]) for e in audit if "node" in e}
    assert any(a[1] == victim and "drain" in a[0] for a in acted), acted
    assert any(a[1] == victim and "remove" in a[0] for a in acted), acted


def test_add_of_a_node_that_does_not_answer_names_the_secret_file(
        cluster: LocalCluster) -> None:
    """`tessera node add` of a node not started yet said to start it with `--secret-file
    FILE` but not which file (newuser20 had to find DATA/secrets/cluster.key): the refusal
    names the cluster's secret file. Nothing changes: the shared cluster is enough."""
    r = node_cli(cluster, "add", "--id", "never-started", "--zone", "az2",
                 "--address", f"{NEW_HOST}:{free_port()}")
    assert r.returncode == 1 and "(NodeUnreachable)" in r.stderr, r
    secret = (cluster.data / "secrets" / "cluster.key").resolve()
    assert f"a copy of this cluster's {secret}" in r.stderr, r.stderr
    assert "never-started" not in node_cli(cluster, "list", "--all").stdout


def test_add_node_takes_new_writes_and_rebalanced_shards(mc: LocalCluster) -> None:
    s3 = mc.client()
    s3.create_bucket(Bucket="members")
    data = put_objects(s3, "members", 12, seed=4)
    port = free_port([NEW_HOST])
    proc = subprocess.Popen(
        [sys.executable, "-m", "nodes", "--id", "n10", "--listen", f"{NEW_HOST}:{port}",
         "--zone", "az2", "--data", str(mc.data / "nodes" / "n10"),
         "--secret-file", str(mc.data / "secrets" / "cluster.key"), "--scrub-rate", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None and "ready" in proc.stdout.readline()
        r = node_cli(mc, "add", "--id", "n9", "--zone", "az2", "--address", f"{NEW_HOST}:{port}")
        assert r.returncode == 1 and "already in the cluster map" in r.stderr
        r = node_cli(mc, "add", "--id", "n10", "--zone", "az9", "--address", f"{NEW_HOST}:{port}")
        assert r.returncode == 1 and "az2" in r.stderr  # the node says otherwise
        r = node_cli(mc, "add", "--id", "n10", "--zone", "az2", "--address", f"{NEW_HOST}:{port}")
        assert r.returncode == 0, r.stderr
        assert node_rows(mc)["n10"]["membership"] == "active"
        new = put_objects(s3, "members", 10, seed=5)
        wait(mc, "the rebalancer to move shards to n10",
             lambda: status(mc)["rebalance"].get("moved_to", {}).get("n10", 0) > 0)

        def direct_writes_reached_n10() -> bool:
            """Some of n10's shards came straight from new PUTs, not from the rebalancer.
            Gateway worker processes other than the admin's learn of a new member at their
            next membership refresh (every 2 s), so a first batch may all miss it: write
            another batch until one lands there."""
            wait(mc, "the rebalancer to settle",
                 lambda: status(mc)["rebalance"]["state"] == "idle")
            moved = status(mc)["rebalance"]["moved_to"]["n10"]
            if len(mc.shard_files()["n10"]) > moved:
                return True
            new.update(put_objects(s3, "members", 5, seed=100 + len(new)))
            return False

        wait(mc, "new PUTs to place shards on n10", direct_writes_reached_n10)
        doc = status(mc)
        assert doc["rebalance"]["balance_moves"] <= 256 and doc["rebalance"]["failed"] == 0
        check(s3, "members", data)
        check(s3, "members", new)
        assert_redundant(mc, len(data) + len(new))
        r = node_cli(mc, "remove", "n10")  # not empty
        assert r.returncode == 1 and "still holds" in r.stderr
    finally:
        stop_processes([proc])  # TERM; KILL if its graceful shutdown outlasts 10 s



def test_remove_of_a_drained_node_says_its_shards_await_collection(
        mc_slow_gc: LocalCluster) -> None:
    """Drained, but deleted objects' shards are not collected yet: the refusal says the
    drain is done and what to wait for, not that it is 'in progress' with '0 shards left'."""
    s3 = mc_slow_gc.client()
    s3.create_bucket(Bucket="members")
    for key in put_objects(s3, "members", 4, seed=7):
        s3.delete_object(Bucket="members", Key=key)  # its shards wait an hour for the GC
    files = mc_slow_gc.shard_files()
    victim = max((n for n in files if n.startswith("n")), key=lambda n: len(files[n]))
    assert files[victim]
    assert node_cli(mc_slow_gc, "drain", victim).returncode == 0
    # --force waits for the drain, and for every gateway to have re-read the map (review19c)
    r = node_cli(mc_slow_gc, "remove", victim, "--force", "--yes")
    assert r.returncode == 1 and ("still being drained" in r.stderr
                                  or "a gateway may still place writes on it" in r.stderr), \
        r.stderr
    assert node_rows(mc_slow_gc)[victim]["membership"] == "draining"
    wait(mc_slow_gc, "the drain to finish",
         lambda: (node_rows(mc_slow_gc)[victim].get("drain") or {}).get("drained") is True)
    assert mc_slow_gc.shard_files()[victim]  # nothing to move, nothing collected yet
    r = node_cli(mc_slow_gc, "remove", victim)
    line = r.stderr.strip()
    assert r.returncode == 1 and "\n" not in line, line
    assert f"node '{victim}' is drained but still holds" in line, line
    assert "gc_grace_s (3600 s" in line and "in progress" not in line, line
    assert "again once `tessera node list` shows 0 shards" in line, line
    # --wait says what it waits for, and gives up at --timeout with 3 (the drain goes on)
    r = node_cli(mc_slow_gc, "drain", victim, "--wait", "--timeout", "1")
    assert r.returncode == 3, r.stderr
    assert "await collection" in r.stderr and f"`tessera node remove {victim} --force`" \
        in r.stderr and "the drain goes on" in r.stderr, r.stderr
    since = node_rows(mc_slow_gc)[victim]["since"]
    wait(mc_slow_gc, "every gateway's cluster map to have dropped the draining node",
         lambda: time.time() > since + WATCHED_REFRESH_S + 1)
    # a shard no stripe names yet, just written (a write not committed yet), is not dropped
    young = mc_slow_gc.shard(victim, "f" * 32 + ".0").path
    young.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(mc_slow_gc.shard_files()[victim][0].path, young)
    r = node_cli(mc_slow_gc, "remove", victim, "--force", "--yes")
    assert r.returncode == 1 and "younger than [repair] orphan_grace_s (3600 s)" in r.stderr \
        and "try again in" in r.stderr and young.name in r.stderr, r.stderr
    assert node_rows(mc_slow_gc)[victim]["membership"] == "draining"
    young.unlink(missing_ok=True)  # the node may have quarantined it (its header names
    # another shard)
    # --force says what it abandons first; without a terminal it needs --yes
    r = node_cli(mc_slow_gc, "remove", victim, "--force")
    held = len(mc_slow_gc.shard_files()[victim])
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert f"removing node {victim} abandons {held} shard file(s)" in r.stderr \
        and "nothing acknowledged is on it" in r.stderr and "--yes" in r.stderr, r.stderr
    assert node_rows(mc_slow_gc)[victim]["membership"] == "draining"
    # the audit log does not record that refused remove as a removal (review19c)
    audit = admin_request("GET", "/audit", query={"action": "node.remove"},
                          env=mc_slow_gc.env)["entries"]
    forced = [e for e in audit if e.get("result") == "ok" and "force" in e]
    assert forced and all(e.get("dry_run") is True for e in forced), audit
    assert forced[0]["force"]["abandoned"] == held, forced
    r = node_cli(mc_slow_gc, "remove", victim, "--force", "--yes")
    assert r.returncode == 0 and "removed from the cluster map" in r.stdout, r.stderr
    assert victim not in node_rows(mc_slow_gc)


def test_force_remove_refuses_while_a_stripe_names_the_node(mc_stalled: LocalCluster) -> None:
    """`remove --force` never drops an acknowledged shard: on an active node it is refused
    (drain first), and on a draining node whose shards are still named by stripes (the
    drain cannot move them: 1 byte/s) it is refused, naming why; the data stays whole."""
    s3 = mc_stalled.client()
    s3.create_bucket(Bucket="members")
    data = put_objects(s3, "members", 4, seed=11)
    files = mc_stalled.shard_files()
    victim = max((n for n in files if n.startswith("n")), key=lambda n: len(files[n]))
    r = node_cli(mc_stalled, "remove", victim, "--force", "--yes")
    assert r.returncode == 1 and "is not draining" in r.stderr, r.stderr
    assert node_cli(mc_stalled, "drain", victim).returncode == 0
    r = node_cli(mc_stalled, "remove", victim, "--force", "--yes")
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert "named by a stripe" in r.stderr and "--force would drop them" in r.stderr, r.stderr
    assert node_rows(mc_stalled)[victim]["membership"] == "draining"
    check(s3, "members", data)


def test_a_write_placed_on_a_node_removed_before_its_commit_is_not_committed(
        mc: LocalCluster) -> None:
    """A PUT placed on a node that `tessera node remove` takes out of the map before the PUT
    commits is refused (503, nothing committed), never acknowledged naming the removed node
    (one shard short from its first moment). The PUT is held by its own body: the test sends
    part of it, waits until every target node has the shard stream's temporary file (so the
    placement is made), removes one of them (an empty active node), then sends the rest."""
    import http.client
    from urllib.parse import urlsplit

    s3 = mc.client()
    s3.create_bucket(Bucket="members")
    # 6 segments of 4 MiB: each shard 6 MiB, so a node starts its temporary file (after its
    # first 4 MiB batch) while the last segment is held back
    body = random.Random(5).randbytes(24 << 20)
    url = urlsplit(s3.generate_presigned_url(
        "put_object", Params={"Bucket": "members", "Key": "held"}, ExpiresIn=600))
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    try:
        conn.putrequest("PUT", f"{url.path}?{url.query}", skip_accept_encoding=True)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        conn.send(body[:-1024])  # the last segment held back

        def streaming() -> list[str]:
            return sorted(d.name for d in (mc.data / "nodes").iterdir()
                          if any((d / "tmp").glob("*")))
        wait(mc, "the held PUT's shard streams on its 6 targets",
             lambda: len(streaming()) == 6)
        victim = streaming()[0]
        r = node_cli(mc, "remove", victim)
        assert r.returncode == 0 and "removed from the cluster map" in r.stdout, r.stderr
        conn.send(body[-1024:])
        resp = conn.getresponse()
        answer = resp.read().decode()
    finally:
        conn.close()
    assert resp.status == 503 and "removed from the cluster" in answer, (resp.status, answer)
    with pytest.raises(s3.exceptions.ClientError):
        s3.head_object(Bucket="members", Key="held")
    refused: list[str] = []

    def placed_anew() -> bool:
        """A PUT placed on the map as it is; a gateway worker that has not yet seen the
        removal places it on the removed node and says so (503, retry), as a client retries."""
        try:
            s3.put_object(Bucket="members", Key="held", Body=body)
            return True
        except s3.exceptions.ClientError as e:
            assert e.response["Error"]["Code"] == "ServiceUnavailable", e
            assert "removed from the cluster" in e.response["Error"]["Message"], e
            refused.append(e.response["Error"]["Message"])
            return False
    wait(mc, "a PUT placed on the map without the removed node", placed_anew)
    assert len(refused) < 10, refused
    assert s3.get_object(Bucket="members", Key="held")["Body"].read() == body
