"""Gateway workers' commits through worker 0's batcher (storage/metadata/etcd_share.py), on a
real 3-member etcd cluster: two stores stand for two worker processes (worker 0 owns the
batcher), and a real process stands for worker 0 where it must die mid-commit."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from storage.metadata import Txn
from storage.metadata.etcd import EtcdError, EtcdStore
from tests.contract.conftest import session_tls

pytestmark = pytest.mark.skipif(not os.environ.get("TESSERA_ETCD_ENDPOINTS"),
                                reason="no etcd cluster (etcd not installed)")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def ns() -> bytes:
    return b"es/" + secrets.token_hex(6).encode() + b"/"


@pytest.fixture
def sock(tmp_path: Path) -> Path:
    return tmp_path / "commits.sock"


@pytest.fixture
async def other() -> AsyncIterator[EtcdStore]:
    """A second client: another gateway worker process's store."""
    s = await EtcdStore.open(tuple(os.environ["TESSERA_ETCD_ENDPOINTS"].split(",")), session_tls())
    try:
        yield s
    finally:
        await s.close()


def _put(ns: bytes, i: int) -> Txn:
    key = ns + b"o/%d" % i  # a PutObject's shape: create-if-absent, a record and a body
    return Txn(compares={key: 0}, puts={key: b"rec%d" % i, ns + b"b/%d" % i: b"x" * 4096})


async def test_two_workers_commits_share_one_request(etcd: EtcdStore, other: EtcdStore,
                                                     ns: bytes, sock: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Commits of both workers, arriving while worker 0 has one in flight, go out in one
    nested Txn from worker 0; the other worker sends none to etcd. The first is held until
    all have reached worker 0's batcher (no timing)."""
    n = 8
    batcher = etcd._batcher  # noqa: SLF001
    run, call = batcher.run, batcher._call  # noqa: SLF001
    arrived, all_in, calls = 0, asyncio.Event(), []

    async def counted(txn: Txn, reads: tuple[bytes, ...], wanted: Any = None) -> Any:
        nonlocal arrived
        arrived += 1
        if arrived == n:
            all_in.set()
        return await run(txn, reads, wanted)

    async def held(body: bytes, still: Any = None) -> Any:
        calls.append(body)
        try:  # the first commit waits for the others to queue behind it
            await asyncio.wait_for(all_in.wait(), 60)
        except TimeoutError:
            raise AssertionError(f"only {arrived} of {n} commits reached worker 0's "
                                 "batcher") from None
        return await call(body, still)

    monkeypatch.setattr(batcher, "run", counted)
    monkeypatch.setattr(batcher, "_call", held)
    await etcd.share_commits(sock, owner=True)
    await other.share_commits(sock, owner=False)
    theirs = other.round_trips
    done = await asyncio.gather(*(etcd.txn(_put(ns, i)) for i in range(n // 2)),
                                *(other.txn(_put(ns, i)) for i in range(n // 2, n)))
    assert done == [True] * n
    assert len(calls) == 2  # the first alone, then the n - 1 queued behind it
    assert other.round_trips == theirs
    for i in range(n):
        assert (await other.get(ns + b"o/%d" % i)).value == b"rec%d" % i  # type: ignore[union-attr]


async def test_one_winner_of_a_race_across_workers(etcd: EtcdStore, other: EtcdStore,
                                                   ns: bytes, sock: Path) -> None:
    """Create-if-absent of one key from both workers, 10 each: exactly one wins, and each
    loser sees the winner's record."""
    await etcd.share_commits(sock, owner=True)
    await other.share_commits(sock, owner=False)
    key = ns + b"race"

    async def claim(store: EtcdStore, i: int) -> tuple[bool, Any]:
        return await store.txn_or_read(Txn(compares={key: 0}, puts={key: b"w%d" % i}), (key,))

    got = await asyncio.gather(*(claim(etcd if i % 2 else other, i) for i in range(20)))
    winners = [i for i, (ok, _) in enumerate(got) if ok]
    assert len(winners) == 1
    value = b"w%d" % winners[0]
    assert all(seen[key].value == value for ok, seen in got if not ok)
    assert (await etcd.get(key)).value == value  # type: ignore[union-attr]


async def test_a_worker_dying_mid_commit_leaves_worker_0_serving(
        etcd: EtcdStore, other: EtcdStore, ns: bytes, sock: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The other worker goes away with a commit in worker 0's batcher: that commit still
    applies (it was sent; nobody is told), and worker 0 commits on."""
    await etcd.share_commits(sock, owner=True)
    await other.share_commits(sock, owner=False)
    batcher = etcd._batcher  # noqa: SLF001
    call, entered, go = batcher._call, asyncio.Event(), asyncio.Event()  # noqa: SLF001

    async def held(body: bytes, still: Any = None) -> Any:
        entered.set()
        await go.wait()
        return await call(body, still)

    monkeypatch.setattr(batcher, "_call", held)
    pending = asyncio.ensure_future(other.txn(_put(ns, 1)))
    try:
        try:
            await asyncio.wait_for(entered.wait(), 60)
        except TimeoutError:
            raise AssertionError("the commit never reached worker 0's batcher") from None
        await other._sharing.close()  # type: ignore[union-attr]  # noqa: SLF001 - its
        # connection to worker 0 closes with the commit in flight, as when its process dies
        with pytest.raises(EtcdError, match="outcome unknown"):
            await pending
    finally:
        go.set()  # (also on failure: worker 0's store closes at teardown)
    monkeypatch.setattr(batcher, "_call", call)
    assert await etcd.txn(_put(ns, 2))  # (sent after the held batch returned)
    assert (await etcd.get(ns + b"o/1")).value == b"rec1"  # type: ignore[union-attr]


OWNER = """
import asyncio, os, sys
from storage.metadata.etcd import EtcdStore
from storage.metadata.etcd_tls import client_tls_in
TLS = (client_tls_in(__import__("pathlib").Path(os.environ["TESSERA_ETCD_TLS_DIR"]))
       if os.environ.get("TESSERA_ETCD_TLS_DIR") else None)

async def main():
    store = await EtcdStore.open(tuple(os.environ["TESSERA_ETCD_ENDPOINTS"].split(",")), TLS)
    hold = asyncio.Event()

    async def held(body, still=None):  # worker 0 takes commits in but never sends them
        print("commit", flush=True)
        await hold.wait()

    store._batcher._call = held
    await store.share_commits(__import__("pathlib").Path(sys.argv[1]), owner=True)
    print("ready", flush=True)
    await hold.wait()

asyncio.run(main())
"""


async def test_worker_0_killed_mid_commit_fails_it_clearly_then_commits_go_direct(
        other: EtcdStore, ns: bytes, sock: Path) -> None:
    """Worker 0 (a real process) is SIGKILLed holding a forwarded commit: that caller gets
    "outcome unknown" (never a success nor a silent retry: it may have applied), and the
    worker's next commits go to etcd itself and succeed."""
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(sock)], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        assert await asyncio.to_thread(owner.stdout.readline) == "ready\n"
        await other.share_commits(sock, owner=False)
        pending = asyncio.ensure_future(other.txn(_put(ns, 1)))
        try:  # (on failure the kill below ends the read)
            took = await asyncio.wait_for(asyncio.to_thread(owner.stdout.readline), 60)
        except TimeoutError:
            raise AssertionError("the commit never reached worker 0") from None
        assert took == "commit\n"
        owner.send_signal(signal.SIGKILL)
        with pytest.raises(EtcdError, match="outcome unknown"):
            await pending
        sent = other.round_trips
        assert await other.txn(_put(ns, 2))
        assert other.round_trips == sent + 1  # straight to etcd
        assert await other.get(ns + b"o/1") is None  # (held: it never reached etcd)
    finally:
        owner.kill()
        owner.wait()
        owner.stdout.close()  # type: ignore[union-attr]
