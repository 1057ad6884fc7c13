"""Attacks on packed shards (issue 17) on real clusters: nodes pack every whole shard up to
1 MiB (`TESSERA_PACKS_MAX_SHARD_BYTES`), and

- a node killed with SIGKILL in the middle of a burst of PUTs still holds, after its restart,
  every shard an acknowledged object's manifest names on it (its own index says so, through
  its list API), and every acknowledged object reads back;
- a bit flipped inside a packed record, with no client reading it, is found by the node's
  scrubber (no keys: frame checksums), quarantined and rebuilt, the pack's other shards kept;
- a torn record at the end of a pack (a crash mid-append) is set aside at restart: the node
  serves all it acknowledged, keeps the torn bytes in quarantine, and appends after it.

Repair is left at its defaults in the restart tests (a down node is rebuilt elsewhere only
after 5 minutes), so what a restarted node lists is what it kept, not what repair gave back.
"""

from __future__ import annotations

import json
import os
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nodes import packformat as pf
from storage.shards.format import FRAME_HEAD_BYTES, HEADER_BYTES
from storage.shards.ids import new_stripe_id, shard_id
from tests.integration.cluster import LocalCluster, stop_processes, wait_for
from tests.integration.test_durability import FAST, Durable

PACKED = {"TESSERA_PACKS_MAX_SHARD_BYTES": str(1 << 20)}
DEADLINE_S = 60.0
VICTIM = "n1"  # a standard node: 2 of every 3 stripes have a shard on it


def _cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
             env: dict[str, str]) -> Iterator[Durable]:
    for k, v in {**PACKED, **env}.items():
        monkeypatch.setenv(k, v)
    c = LocalCluster(tmp_path / "data").start()
    d = Durable(c)
    try:
        yield d
    finally:
        stop_processes(d.extra)
        c.stop()


@pytest.fixture
def packed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Durable]:
    """Packing on, repair and scrub at their defaults."""
    yield from _cluster(tmp_path, monkeypatch, {})


@pytest.fixture
def packed_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Durable]:
    """Packing on, a fast repair sweep and scrubber."""
    yield from _cluster(tmp_path, monkeypatch, FAST)


def _on_node(c: LocalCluster, bucket: str, keys: list[str], node: str) -> set[str]:
    """The shard ids the manifests of `keys` place on `node`."""
    return {shard_id(p.stripe_id, i) for key in keys for p in c.manifest(bucket, key).parts
            for i, n in enumerate(p.nodes) if n == node}


def _read_all(s3: Any, bucket: str, acked: dict[str, bytes]) -> None:
    for key, body in acked.items():
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body, key


def _put_some(s3: Any, bucket: str, n: int, seed: int) -> dict[str, bytes]:
    rnd = random.Random(seed)
    out = {f"s{seed}-{i}": rnd.randbytes(rnd.randint(20_000, 900_000)) for i in range(n)}
    for key, body in out.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    return out


def test_node_killed_mid_put_burst_keeps_every_acknowledged_shard(packed: Durable) -> None:
    c = packed.c
    c.client().create_bucket(Bucket="burst")
    acked: dict[str, bytes] = {}
    lock = threading.Lock()
    killed = threading.Event()
    enough = threading.Event()  # acknowledgements before the kill

    def writer(w: int) -> None:
        s3 = c.client()  # boto3 clients are not shared across threads
        rnd = random.Random(w)
        after = 0
        for i in range(400):
            body = rnd.randbytes(rnd.randint(20_000, 700_000))  # shards 5-175 KB: packed
            try:
                s3.put_object(Bucket="burst", Key=f"w{w}-{i}", Body=body)
            except Exception:  # noqa: BLE001 - a PUT the kill cut is simply not acknowledged
                continue
            with lock:
                acked[f"w{w}-{i}"] = body
                if len(acked) >= 24:
                    enough.set()
            if killed.is_set():
                after += 1
                if after >= 8:  # every writer goes on past the kill
                    return

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    assert enough.wait(120), "the burst never got going"
    c.kill(VICTIM)  # SIGKILL, while four PUTs are in flight
    killed.set()
    for t in threads:
        t.join(300)
    assert not any(t.is_alive() for t in threads)
    _restart(packed)
    keys = sorted(acked)
    expected = _on_node(c, "burst", keys, VICTIM)
    assert len(expected) >= 10, "too few acknowledged shards on the victim to mean much"
    missing = expected - c.listed(VICTIM)
    assert not missing, f"{len(missing)} acknowledged shards lost by the restarted node"
    assert all(s.packed for s in c.shard_files()[VICTIM] if s.sid in expected)
    _read_all(c.client(), "burst", acked)


def test_bit_flip_in_packed_record_is_found_by_scrub_and_repaired(
        packed_fast: Durable) -> None:
    d = packed_fast
    c = d.c
    s3 = c.client()
    s3.create_bucket(Bucket="rot")
    data: dict[str, bytes] = {}
    held: list[Any] = []
    for seed in range(5, 15):  # placement hashes random stripe ids: put until the victim
        data.update(_put_some(s3, "rot", 4, seed=seed))  # holds two (11% miss after 4)
        held = [s for s in c.shard_files()[VICTIM] if s.packed]
        if len(held) >= 2:
            break
    assert len(held) >= 2, "the victim should hold several packed shards"
    target = random.Random(5).choice(held)
    neighbours = {s.sid for s in held} - {target.sid}
    target.flip(HEADER_BYTES + FRAME_HEAD_BYTES + 100, 0x10)  # inside the first block
    # No client read: only the node's scrubber (frame checksums, no keys) can find it.
    d.wait("the scrubber to find the rot", lambda: d.status()["scrub"]["corrupt_found"] >= 1)
    d.wait("the shard to be rebuilt",
           lambda: d.status()["repair"].get("shards_rebuilt", 0) >= 1)
    d.wait_redundant()
    sidecars = [json.loads(p.read_text()) for p in
                (c.data / "nodes" / VICTIM / "quarantine").glob(f"{target.sid}.*.json")]
    assert sidecars and any("packs/" in str(s.get("from", "")) for s in sidecars), sidecars
    assert neighbours <= c.listed(VICTIM)  # the pack's other shards are kept
    _read_all(s3, "rot", data)


def test_torn_pack_tail_is_set_aside_at_restart(packed: Durable) -> None:
    d = packed
    c = d.c
    s3 = c.client()
    s3.create_bucket(Bucket="torn")
    data: dict[str, bytes] = {}
    before: set[str] = set()
    for seed in range(7, 17):  # placement hashes random stripe ids: put until the victim
        data.update(_put_some(s3, "torn", 6, seed=seed))  # holds one (0.14% miss after 6)
        before = _on_node(c, "torn", sorted(data), VICTIM)
        if before:
            break
    assert before
    c.kill(VICTIM)
    wait_for(lambda: _dead(c.pid(VICTIM)), "the victim to die", DEADLINE_S)
    packs = sorted((c.data / "nodes" / VICTIM / "packs").glob("*.pack"))
    assert packs
    # A crash mid-append: a valid head, then only part of the body it announces.
    torn = pf.encode_head(pf.PUT, new_stripe_id(), 0, 1, 65_536) + os.urandom(1_000)
    with open(packs[-1], "ab") as f:
        f.write(torn)
    _restart(d, kill=False)
    assert before <= c.listed(VICTIM)
    quarantine = c.data / "nodes" / VICTIM / "quarantine"
    aside = [p.read_bytes() for p in quarantine.glob(f"{packs[-1].name}.*.torn")]
    assert aside == [torn]
    wait_for(lambda: _up(d), "the gateway to see the victim up again", DEADLINE_S)
    # The node appends after the cut: new shards land, and survive another kill -9.
    more: dict[str, bytes] = {}
    after: set[str] = set()
    for seed in range(100, 110):  # as above: put until the victim holds a new one
        more.update(_put_some(s3, "torn", 6, seed=seed))
        after = _on_node(c, "torn", sorted(more), VICTIM)
        if after:
            break
    assert after
    _restart(d)
    assert before | after <= c.listed(VICTIM)
    _read_all(s3, "torn", {**data, **more})


def _restart(d: Durable, kill: bool = True) -> None:
    """SIGKILL the victim (unless done), wait for it to die, start it again (ready)."""
    if kill:
        d.c.kill(VICTIM)
    wait_for(lambda: _dead(d.c.pid(VICTIM)), "the victim to die", DEADLINE_S)
    d.restart(VICTIM)


def _up(d: Durable) -> bool:
    """The gateway places shards on the victim again (its health says up): a write right
    after the restart may still go around it."""
    return any(n["id"] == VICTIM and n["state"] == "up" for n in d.status()["nodes"])


def _dead(pid: int) -> bool:
    """`pid` has exited (or is a zombie nobody reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True

