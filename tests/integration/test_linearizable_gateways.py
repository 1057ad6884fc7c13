"""Reads are linearizable per key across two gateways while etcd members are paused.

Four clients PUT, GET and DELETE three keys through both gateways (each call to a random
one) while each etcd member in turn, the leader among them, is stopped (SIGSTOP) and
resumed, then the second gateway itself; every call's start, end and answer is recorded and the history of each key is
checked against a register (tests/lincheck.py): a GET after a PUT's 200, through either
gateway, never returns an older body, and a deleted key never comes back. A call that failed
or timed out may or may not have taken effect; the checker allows both.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
import uuid
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from tests.integration.cluster import LocalCluster, wait_for
from tests.integration.test_two_gateways import gateway_client, gw2_cluster, pytestmark  # noqa: F401
from tests.lincheck import Op, check

KEYS = ("k0", "k1", "k2")
CLIENTS = 4
OPS_PER_PHASE = 60  # calls answered (any way) in each phase, over all clients


class Recorder:
    """Clients calling through both gateways until told to stop; the history they made."""

    def __init__(self, c: LocalCluster, bucket: str) -> None:
        self.c, self.bucket = c, bucket
        self.history: list[Op] = []
        self.answered = 0
        self.ok = 0  # calls that got their answer (not an error)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(CLIENTS)]

    def __enter__(self) -> Recorder:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()

    def _run(self, i: int) -> None:
        rng = random.Random(i)
        clients = [gateway_client(self.c, p, timeout_s=5) for p in (self.c.port, self.c.port + 1)]
        while not self.stop.is_set():
            s3, key, kind = rng.choice(clients), rng.choice(KEYS), rng.random()
            start = time.monotonic()
            try:
                if kind < 0.45:
                    body = f"{i}-{uuid.uuid4().hex}".encode()
                    s3.put_object(Bucket=self.bucket, Key=key, Body=body)
                    op = Op(key, "w", body, start, time.monotonic(), str(i))
                elif kind < 0.55:
                    s3.delete_object(Bucket=self.bucket, Key=key)
                    op = Op(key, "w", None, start, time.monotonic(), str(i))
                else:
                    try:
                        got = s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
                    except ClientError as e:
                        if e.response["Error"]["Code"] != "NoSuchKey":
                            raise
                        got = None
                    op = Op(key, "r", got, start, time.monotonic(), str(i))
                ok = True
            except (ClientError, BotoCoreError):  # 5xx, timeout: it may have applied
                op = Op(key, "w", body, start) if kind < 0.45 else (
                    Op(key, "w", None, start) if kind < 0.55 else Op(key, "r", None, start))
                ok = False
            with self.lock:
                self.history.append(op)
                self.answered += 1
                self.ok += ok

    def wait_ops(self, n: int, what: str) -> None:
        """Wait until `n` more calls have been answered successfully."""
        with self.lock:
            target = self.ok + n
        wait_for(lambda: self.ok >= target, what, timeout=300)


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants (a gateway and its worker processes)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def _signal(pid: int, sig: int) -> None:
    """`sig` to `pid`, unless it is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def test_per_key_linearizable_while_etcd_members_pause(
        gw2_cluster: LocalCluster) -> None:  # noqa: F811 - the fixture imported above
    c = gw2_cluster
    bucket = f"lin-{uuid.uuid4().hex[:10]}"
    gateway_client(c, c.port, timeout_s=5).create_bucket(Bucket=bucket)
    members = ("etcd-az1", "etcd-az2", "etcd-az3")
    with Recorder(c, bucket) as rec:
        rec.wait_ops(OPS_PER_PHASE, "calls before any pause")
        for m in members:  # the leader is one of them: each is paused once
            pid = c.pid(m)
            os.kill(pid, signal.SIGSTOP)
            try:
                rec.wait_ops(OPS_PER_PHASE, f"calls served while {m} is stopped")
            finally:
                os.kill(pid, signal.SIGCONT)
            rec.wait_ops(OPS_PER_PHASE // 2, f"calls after {m} resumed")
        # the second gateway (and its workers) paused mid-calls: its calls time out, may
        # apply when it resumes, and must still fit the history
        paused = _tree(c.pid("gateway2"))
        try:  # (a pid gone meanwhile must not leave the others stopped: CI would hang on them)
            for pid in paused:
                _signal(pid, signal.SIGSTOP)
            rec.wait_ops(OPS_PER_PHASE // 4, "calls served while gateway2 is stopped")
        finally:
            for pid in paused:
                _signal(pid, signal.SIGCONT)
        rec.wait_ops(OPS_PER_PHASE, "calls after gateway2 resumed")
    history = list(rec.history)
    began = time.monotonic()
    bad = check(history)
    print(f"{len(history)} calls, {rec.ok} answered, checked in {time.monotonic() - began:.1f} s")
    assert not bad, {k: [(o.kind, o.value, round(o.start, 3), o.end, o.client) for o in ops]
                     for k, ops in bad.items()}
