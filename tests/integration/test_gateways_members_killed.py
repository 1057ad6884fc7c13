"""Two gateways on a 3-member etcd while members and a gateway are killed (SIGKILL), not paused.

Clients call both gateways at once (each call to a random one) while, in turn, the etcd
leader is SIGKILLed and restarted, a follower is SIGKILLed and restarted, the new leader is
SIGKILLed and restarted, the second gateway (with its worker processes) is SIGKILLed
mid-traffic and started again by hand, and two members are SIGKILLed at once (no quorum: calls
fail) and restarted. What must hold afterwards:

- per key, the history of PUT / GET / DELETE is linearizable (tests/lincheck.py);
- a conditional PUT (`If-None-Match: *` on a new key, `If-Match: <etag>`) raced through the
  two gateways has at most one winner; a refusal (412) of `If-None-Match: *` means some
  write of the key took effect; the key then holds the winner's body;
- in a versioned bucket every acknowledged PUT is a version, and a PUT acknowledged before
  another began is the older version (versions ordered by real time);
- listings through either gateway name exactly the keys a GET finds, and every version
  listed reads back whole (a commit that failed but applied kept its shards).

A call that timed out or failed with a 5xx may or may not have taken effect: every check
allows both.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import BotoCoreError, ClientError

from ops.etcdcluster import EtcdCluster, EtcdMember
from tests.integration.cluster import LocalCluster, wait_for
from tests.integration.test_linearizable_gateways import _signal, _tree
from tests.integration.test_two_gateways import (  # noqa: F401 - the fixture and skip mark
    WORKERS,
    _status,
    gateway_client,
    gw2_cluster,
    pytestmark,
)
from tests.lincheck import Op, check

KEYS = ("k0", "k1", "k2")
CLIENTS = 4
OPS_PER_PHASE = 60  # calls answered successfully in each phase, over all clients
# a conditional PUT refused: 412 (the condition failed), 409 (a concurrent write: retry)
LOST = {"PreconditionFailed": "412", "ConditionalRequestConflict": "409"}


def _md5(body: bytes) -> str:
    return '"' + hashlib.md5(body).hexdigest() + '"'  # noqa: S324 - S3's ETag, not security


@dataclass
class Race:
    """One conditional PUT of `key` raced through both gateways: each racer's answer."""

    key: str
    kind: str  # "create" (If-None-Match: *) or "match" (If-Match: the base's ETag)
    base: bytes | None = None  # the body the If-Match racers compare against
    answers: dict[bytes, str] = field(default_factory=dict)  # body -> ok | 412 | 409 | ?


class Traffic:
    """Clients calling through both gateways until told to stop, and what they saw."""

    def __init__(self, c: LocalCluster, reg: str, ver: str, once: str) -> None:
        self.c, self.reg, self.ver, self.once = c, reg, ver, once
        self.history: list[Op] = []
        self.versions: list[tuple[bytes, float, float]] = []  # body, start, end (inf: ?)
        self.races: list[Race] = []
        self.unsure: dict[str, bytes] = {}  # key -> base whose PUT failed (it may have applied)
        self.ok = self.failed = 0  # calls answered / failed (an error, a timeout)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(CLIENTS)]
        self.threads += [threading.Thread(target=self._races, daemon=True)]

    def clients(self) -> list[Any]:
        return [gateway_client(self.c, p, timeout_s=5) for p in (self.c.port, self.c.port + 1)]

    def __enter__(self) -> Traffic:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()

    def _count(self, ok: bool) -> None:
        with self.lock:
            self.ok += ok
            self.failed += not ok

    def _run(self, i: int) -> None:
        rng = random.Random(i)
        clients = self.clients()
        while not self.stop.is_set():
            s3, key, kind = rng.choice(clients), rng.choice(KEYS), rng.random()
            body = f"{i}-{uuid.uuid4().hex}".encode()
            start = time.monotonic()
            try:
                if kind < 0.35:
                    s3.put_object(Bucket=self.reg, Key=key, Body=body)
                    op = Op(key, "w", body, start, time.monotonic(), str(i))
                elif kind < 0.45:
                    s3.delete_object(Bucket=self.reg, Key=key)
                    op = Op(key, "w", None, start, time.monotonic(), str(i))
                elif kind < 0.75:
                    try:
                        got = s3.get_object(Bucket=self.reg, Key=key)["Body"].read()
                    except ClientError as e:
                        if e.response["Error"]["Code"] != "NoSuchKey":
                            raise
                        got = None
                    op = Op(key, "r", got, start, time.monotonic(), str(i))
                else:
                    op = None
                    try:
                        s3.put_object(Bucket=self.ver, Key="v", Body=body)
                        end = time.monotonic()
                    except (ClientError, BotoCoreError):
                        end = math.inf
                        raise
                    finally:
                        with self.lock:
                            self.versions.append((body, start, end))
                ok = True
            except (ClientError, BotoCoreError):  # 5xx, timeout: it may have applied
                op = (Op(key, "w", body, start) if kind < 0.35 else
                      Op(key, "w", None, start) if kind < 0.45 else
                      Op(key, "r", None, start) if kind < 0.75 else None)
                ok = False
            with self.lock:
                if op is not None:
                    self.history.append(op)
            self._count(ok)

    def _races(self) -> None:
        """Conditional PUTs, each raced by two threads, one per gateway, released together."""
        gw1, gw2 = self.clients()
        n = 0
        while not self.stop.is_set():
            n += 1
            race = Race(f"once-{n}", "create") if n % 2 else Race(f"match-{n}", "match")
            if race.kind == "match":
                race.base = f"base-{n}".encode()
                try:
                    gw1.put_object(Bucket=self.once, Key=race.key, Body=race.base)
                except (ClientError, BotoCoreError):  # no base acknowledged: no race, but
                    with self.lock:  # the PUT may have applied: the key may exist all the same
                        self.unsure[race.key] = race.base or b""
                    continue
            go = threading.Barrier(2)
            racers = [threading.Thread(target=self._racer, args=(s3, race, go, j))
                      for j, s3 in enumerate((gw1, gw2))]
            for t in racers:
                t.start()
            for t in racers:
                t.join()
            with self.lock:
                self.races.append(race)

    def _racer(self, s3: Any, race: Race, go: threading.Barrier, j: int) -> None:
        body = f"{race.key}-by-{j}-{uuid.uuid4().hex[:6]}".encode()
        cond = {"IfNoneMatch": "*"} if race.kind == "create" else {"IfMatch": _md5(race.base or b"")}
        go.wait()
        try:
            s3.put_object(Bucket=self.once, Key=race.key, Body=body, **cond)
            answer = "ok"
        except ClientError as e:
            answer = LOST.get(e.response["Error"]["Code"], "?")
        except BotoCoreError:
            answer = "?"
        race.answers[body] = answer
        self._count(answer != "?")

    def wait_failed(self, n: int, what: str) -> None:
        """Wait until `n` more calls have failed."""
        with self.lock:
            target = self.failed + n
        wait_for(lambda: self.failed >= target, what, timeout=300)

    def wait_ops(self, n: int, what: str) -> None:
        """Wait until `n` more calls have been answered successfully."""
        with self.lock:
            target = self.ok + n
        wait_for(lambda: self.ok >= target, what, timeout=300)


def _members(c: LocalCluster) -> EtcdCluster:
    raw = json.loads((c.data / "etcd" / "members.json").read_text())
    return EtcdCluster(c.data / "etcd", [EtcdMember(**m) for m in raw], c.data / "logs",
                       c.data / "run")


def _leader(etcd: EtcdCluster) -> str:
    """The name of the member that is the Raft leader now (asked of the members up, again
    until one round names a leader that answered: a slow or electing member is waited for)."""
    return str(wait_for(lambda: _leader_once(etcd), "an etcd leader that answers",
                        timeout=120))


def _leader_once(etcd: EtcdCluster) -> str | None:
    """One round of status calls: the leader's name, or None when none answered as leader."""
    ids: dict[int, str] = {}
    leader = 0
    tls = etcd.client_tls.ssl_context() if etcd.client_tls is not None else None
    for m in etcd.members:
        req = urllib.request.Request(f"{m.client_url}/v3/maintenance/status", data=b"{}",
                                     method="POST")
        try:
            with urllib.request.urlopen(req, timeout=2, context=tls) as r:
                st = json.loads(r.read())
        except OSError:
            continue
        ids[int(st["header"]["member_id"])] = m.name
        leader = int(st.get("leader", 0)) or leader
    return ids.get(leader)


def _start_gateway2(c: LocalCluster) -> subprocess.Popen[str]:
    """`tessera up` does not restart a gateway: start gateway2 again as it did."""
    p = subprocess.Popen(
        [sys.executable, "-m", "gateway", "--config", str(c.data / "tessera.toml"),
         "--listen", f"127.0.0.1:{c.port + 1}", "--admin-listen",
         f"127.0.0.1:{c.admin_port + 1}", "--log-file", str(c.data / "logs" / "gateway2.log")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    assert p.stdout is not None
    for line in p.stdout:
        if "gateway ready" in line:
            break
    else:
        raise AssertionError(f"gateway2 exited: {p.wait()}")
    threading.Thread(target=p.stdout.read, daemon=True).start()  # drain: never blocks it
    (c.data / "run" / "gateway2.pid").write_text(f"{p.pid}\n")
    return p


def _check_races(races: list[Race], final: dict[str, bytes | None]) -> list[str]:
    bad = []
    for r in races:
        won = [b for b, a in r.answers.items() if a == "ok"]
        unknown = [b for b, a in r.answers.items() if a == "?"]
        body = final[r.key]
        if len(won) > 1:
            bad.append(f"{r.key}: two winners {r.answers}")
        elif won and body != won[0]:
            bad.append(f"{r.key}: won by {won[0]!r} but holds {body!r}")
        elif not won and all(a == "412" for a in r.answers.values()):
            bad.append(f"{r.key}: both failed the condition, nobody wrote: {r.answers}")
        elif not won and body not in (*unknown, r.base if r.kind == "match" else None):
            bad.append(f"{r.key}: nobody won but it holds {body!r}: {r.answers}")
    return bad


def _check_versions(puts: list[tuple[bytes, float, float]], listed: list[str]) -> list[str]:
    """`listed`: the ETags of the versions, newest first."""
    age = {etag: i for i, etag in enumerate(reversed(listed))}  # 0 = oldest
    bad = [f"acknowledged PUT {b!r} is no version" for b, _, end in puts
           if end != math.inf and _md5(b) not in age]
    acked = sorted((p for p in puts if p[2] != math.inf and _md5(p[0]) in age),
                   key=lambda p: p[1])
    for a in acked:
        for b in acked:
            if a[2] < b[1] and age[_md5(a[0])] > age[_md5(b[0])]:
                bad.append(f"{a[0]!r} acknowledged before {b[0]!r} began, yet newer")
    return bad


@pytest.fixture(scope="module")
def started(gw2_cluster: LocalCluster) -> Iterator[list[subprocess.Popen[Any]]]:  # noqa: F811
    """Processes started by hand (restarted members, gateway2): stopped before the cluster."""
    procs: list[subprocess.Popen[Any]] = []
    yield procs
    for p in procs:
        for pid in _tree(p.pid):
            _signal(pid, signal.SIGKILL)
        p.wait()


def _leases(c: LocalCluster, admin_port: int) -> dict[str, tuple[int, int]]:
    """worker -> (holding gateway's pid, fencing token), as the store has them. The pid, not
    the address in the holder (host/address/pid): a gateway restarted by an earlier test
    may name the same address as the other (ci19b: the paused one was taken for the other)."""
    return {w["worker"]: (int(w["holder"].rsplit("/", 1)[1]), int(w["token"]))
            for w in _status(c, admin_port)["workers"]}


FENCED = "deepscrub"  # a worker that polls every second unwatched (DeepScrubber.idle_s)
STOPPED = re.compile(r"worker (\S+): (.*); stopping it here")


def _stopped(log: Path, offset: int) -> dict[str, str]:
    """worker -> why it was first stopped, from the gateway log's lines past `offset`."""
    with log.open("rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    out: dict[str, str] = {}
    for m in STOPPED.finditer(text):
        out.setdefault(m.group(1), m.group(2))
    return out


def test_a_gateway_paused_past_its_leases_is_fenced(
        gw2_cluster: LocalCluster,  # noqa: F811 - the fixture imported above
        started: list[subprocess.Popen[Any]]) -> None:
    """A gateway holding worker leases is stopped (SIGSTOP) past their TTL: the other takes
    those workers over with larger tokens and serves on; resumed, the stale holder gives each
    of them up (logged) instead of taking it back, and reads what was written meanwhile.

    The step fence (storage/workers/stepfence.py) stops deepscrub's loop on resume: it polls
    every second unwatched, so its pause ends during the stop, and the fence refuses its next
    step at once, before the refused renewal (a round trip) tells the gateway the lease is
    lost. Without the fence that step ran beside the other gateway's ("lease lost" only).

    It runs before the kill test: after that one, a lease whose acquisition etcd applied
    while answering an error (leader changed) is named in the store for a TTL by a gateway
    that runs no such worker, so nothing of it is there to stop (ci19b)."""
    c = gw2_cluster
    gws = {c.pid("gateway"): ("gateway", c.port, c.admin_port),
           c.pid("gateway2"): ("gateway2", c.port + 1, c.admin_port + 1)}
    before = _leases(c, c.admin_port)
    assert set(before) >= WORKERS
    held_by = before[FENCED][0]  # (the first gateway started, unless a test moved it)
    mine = {w for w, (gw, _) in before.items() if gw == held_by}
    name, port, _ = gws[held_by]
    [(other_pid, (other, other_port, other_admin))] = [
        (p, g) for p, g in gws.items() if p != held_by]
    log = c.data / "logs" / f"{name}.log"
    logged = log.stat().st_size  # only lines logged from now on count
    paused = _tree(c.pid(name))
    try:
        for pid in paused:
            _signal(pid, signal.SIGSTOP)
        wait_for(lambda: all(gw == other_pid for gw, _ in _leases(c, other_admin).values())
                 and set(_leases(c, other_admin)) >= set(before),
                 f"{other} taking every worker over", timeout=60)
        s3 = gateway_client(c, other_port, timeout_s=10)
        s3.create_bucket(Bucket=(bucket := f"paused-{uuid.uuid4().hex[:8]}"))
        s3.put_object(Bucket=bucket, Key="during", Body=b"written while paused")
    finally:
        for pid in paused:
            _signal(pid, signal.SIGCONT)
    taken = _leases(c, other_admin)
    assert all(taken[w][1] > before[w][1] for w in mine), (before, taken)  # fencing tokens
    # resumed, the stale holder stops the worker whose pause had ended, by its fence first
    # (one may log twice: its fence and then its refused renewal). Not every lease it held
    # need log: a worker it was still (re)acquiring when paused holds no runner to stop
    # (ci19b: waiting for all of `mine` timed out under load) ...
    wait_for(lambda: FENCED in _stopped(log, logged), f"{name} stopping {FENCED}", timeout=60)
    assert _stopped(log, logged)[FENCED].startswith("its lease ran out"), _stopped(log, logged)
    # ... and takes none back: the store still names the other gateway, tokens unchanged
    assert _leases(c, c.admin_port) == _leases(c, other_admin) == taken
    resumed = gateway_client(c, port, timeout_s=10)
    assert resumed.get_object(Bucket=bucket, Key="during")["Body"].read() == \
        b"written while paused"


def test_gateways_consistent_while_members_and_a_gateway_are_killed(
        gw2_cluster: LocalCluster,  # noqa: F811 - the fixture imported above
        started: list[subprocess.Popen[Any]]) -> None:
    c = gw2_cluster
    tag = uuid.uuid4().hex[:8]
    reg, ver, once = f"reg-{tag}", f"ver-{tag}", f"once-{tag}"
    s3 = gateway_client(c, c.port, timeout_s=5)
    for b in (reg, ver, once):
        s3.create_bucket(Bucket=b)
    s3.put_bucket_versioning(Bucket=ver, VersioningConfiguration={"Status": "Enabled"})
    etcd = _members(c)
    with Traffic(c, reg, ver, once) as traffic:
        traffic.wait_ops(OPS_PER_PHASE, "calls before any kill")
        for which in ("leader", "follower", "leader"):
            leader = _leader(etcd)
            victim = leader if which == "leader" else next(
                m.name for m in etcd.members if m.name != leader)
            os.kill(c.pid(victim), signal.SIGKILL)
            traffic.wait_ops(OPS_PER_PHASE, f"calls served while {victim} ({which}) is dead")
            etcd.start_member(victim)  # its data dir as it was at the kill
            started.append(etcd.procs[victim])
            traffic.wait_ops(OPS_PER_PHASE // 2, f"calls after {victim} restarted")
        for pid in _tree(c.pid("gateway2")):  # gateway2 and its workers, mid-calls
            _signal(pid, signal.SIGKILL)
        traffic.wait_ops(OPS_PER_PHASE // 2, "calls served while gateway2 is dead")
        started.append(_start_gateway2(c))
        traffic.wait_ops(OPS_PER_PHASE, "calls after gateway2 restarted")
        leader = _leader(etcd)
        lost = [m.name for m in etcd.members if m.name != leader]  # quorum lost
        for m in lost:
            os.kill(c.pid(m), signal.SIGKILL)
        traffic.wait_failed(CLIENTS * 2, "calls failing while etcd has no quorum")
        for m in lost:
            etcd.start_member(m, wait=False)
            started.append(etcd.procs[m])
        traffic.wait_ops(OPS_PER_PHASE, "calls after etcd's quorum came back")
    gw1, gw2 = traffic.clients()
    final: dict[str, bytes | None] = {}
    for r in traffic.races:
        try:
            final[r.key] = gw2.get_object(Bucket=once, Key=r.key)["Body"].read()
        except ClientError as e:
            assert e.response["Error"]["Code"] == "NoSuchKey", e
            final[r.key] = None
    for k, base in traffic.unsure.items():  # a failed base PUT: absent, or it applied
        final[k] = _gets(gw2, once, k)
        assert final[k] in (None, base), (k, final[k])
    versions = [v for page in gw1.get_paginator("list_object_versions").paginate(Bucket=ver)
                for v in page.get("Versions", [])]
    listed = [v["ETag"] for v in versions]
    for i, v in enumerate(versions):  # every version whole through either gateway (no 5xx)
        got = (gw1, gw2)[i % 2].get_object(Bucket=ver, Key="v", VersionId=v["VersionId"])
        assert _md5(got["Body"].read()) == v["ETag"], v
    present = {k for k in KEYS if _gets(gw1, reg, k) is not None}
    assert all((_gets(gw2, reg, k) is not None) == (k in present) for k in KEYS)
    for gw in (gw1, gw2):
        assert _keys(gw, reg) == present
        assert _keys(gw, once) == {k for k, b in final.items() if b is not None}
    bad_lin = check(traffic.history)
    bad_races = _check_races(traffic.races, final)
    bad_versions = _check_versions(traffic.versions, listed)
    n_races = len(traffic.races)
    print(f"{traffic.failed} failed, {len(traffic.history)} register calls, {len(traffic.versions)} versioned PUTs "
          f"({len(listed)} versions), {n_races} conditional races "
          f"({sum(list(r.answers.values()).count('ok') for r in traffic.races)} won), "
          f"{traffic.ok} answered")
    assert not bad_lin, {k: [(o.kind, o.value, round(o.start, 3), o.end, o.client)
                             for o in ops] for k, ops in bad_lin.items()}
    assert not bad_races, bad_races
    assert not bad_versions, bad_versions[:10]


def _gets(s3: Any, bucket: str, key: str) -> bytes | None:
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as e:
        assert e.response["Error"]["Code"] == "NoSuchKey", e
        return None


def _keys(s3: Any, bucket: str) -> set[str]:
    return {o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])}


def test_the_checks_find_what_they_look_for() -> None:
    """The race and version checks above are not vacuous: each violation they look for."""
    a, b, base = b"a", b"b", b"base"
    two = Race("x", "create", answers={a: "ok", b: "ok"})
    lost = Race("y", "create", answers={a: "412", b: "412"})
    wrong = Race("z", "match", base, answers={a: "ok", b: "412"})
    fine = Race("w", "match", base, answers={a: "?", b: "409"})
    assert [m.split(":")[0] for m in _check_races(
        [two, lost, wrong, fine], {"x": a, "y": None, "z": b, "w": a})] == ["x", "y", "z"]
    assert not _check_races([fine], {"w": base}) and not _check_races([fine], {"w": a})
    puts = [(a, 0.0, 1.0), (b, 2.0, 3.0), (base, 2.5, math.inf)]
    assert not _check_versions(puts, [_md5(b), _md5(a)])
    assert len(_check_versions(puts, [_md5(a), _md5(b)])) == 1  # newer before older
    assert len(_check_versions(puts, [_md5(b)])) == 1  # an acknowledged PUT lost
