"""review20e: worker 0 paused (SIGSTOP) under etcd commit sharing (etcd_share.py).

A stopped process's listening Unix socket still completes connects (the kernel's backlog),
and frames sent to it wait in the kernel until it runs again. Two consequences shown here
against a real worker-0 process and the contract session's etcd:
- after "outcome unknown" and AWAY_S, the worker reconnects to the still-stopped worker 0 and
  its next commit hangs FORWARD_TIMEOUT_S and fails again (instead of going direct);
- a commit its caller was told had an unknown outcome, and that was never sent to etcd, is
  applied when worker 0 resumes: after the caller read the key as absent (unbounded delay).
PING_S is set to 1 s, CHECK_S to 0.05 s, AWAY_S to 0 and FORWARD_TIMEOUT_S to 4 s (the same
paths, faster); a stopped worker 0 is found by its unanswered ping (the next commits go
direct), and a commit sent to it fails at its FORWARD_TIMEOUT_S (it may only be slow).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from storage.metadata import Txn, etcd_share
from storage.metadata.etcd import EtcdError, EtcdStore
from tests.contract.conftest import session_tls

pytestmark = pytest.mark.skipif(not os.environ.get("TESSERA_ETCD_ENDPOINTS"),
                                reason="no etcd cluster (etcd not installed)")

ROOT = Path(__file__).resolve().parents[2]

# the owner's requests' deadline in etcd, 2 s (etcd here is healthy), so that it sends a
# commit whose sender gives up at 4 s (FORWARD_TIMEOUT_S below): 2 s + STALL_S before that
OWNER = """
import asyncio, os, sys, pathlib
from storage.metadata import etcd, etcd_share
from storage.metadata.etcd import EtcdStore
from storage.metadata.etcd_tls import client_tls_in
TLS = (client_tls_in(__import__("pathlib").Path(os.environ["TESSERA_ETCD_TLS_DIR"]))
       if os.environ.get("TESSERA_ETCD_TLS_DIR") else None)

etcd.REQUEST_TIMEOUT_S = etcd_share.REQUEST_TIMEOUT_S = 2.0

async def main():
    store = await EtcdStore.open(tuple(os.environ["TESSERA_ETCD_ENDPOINTS"].split(",")), TLS)
    await store.share_commits(pathlib.Path(sys.argv[1]), owner=True)
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


@pytest.fixture
async def other() -> AsyncIterator[EtcdStore]:
    s = await EtcdStore.open(tuple(os.environ["TESSERA_ETCD_ENDPOINTS"].split(",")), session_tls())
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def owner(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    sock = tmp_path / "commits.sock"
    p = subprocess.Popen([sys.executable, "-c", OWNER, str(sock)], cwd=ROOT,
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        assert p.stdout.readline() == "ready\n"
        yield p, sock
    finally:
        p.send_signal(signal.SIGCONT)
        p.kill()
        p.wait()
        p.stdout.close()  # type: ignore[union-attr]


@pytest.fixture(autouse=True)
def short(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(etcd_share, "PING_S", 1.0)
    monkeypatch.setattr(etcd_share, "CHECK_S", 0.05)
    monkeypatch.setattr(etcd_share, "AWAY_S", 0.0)
    monkeypatch.setattr(etcd_share, "FORWARD_TIMEOUT_S", 4.0)


async def test_stopped_worker_0_is_not_reconnected_to(
        other: EtcdStore, owner: tuple[subprocess.Popen[str], Path]) -> None:
    p, sock = owner
    ns = b"esp/" + secrets.token_hex(6).encode() + b"/"
    await other.share_commits(sock, owner=False)
    assert await other.txn(Txn(puts={ns + b"warm": b"1"}))  # connected to worker 0
    assert (other._sharing.forwarded, other._sharing.direct) == (1, 0)  # type: ignore[union-attr]  # noqa: SLF001
    p.send_signal(signal.SIGSTOP)
    with pytest.raises(EtcdError, match="did not answer a ping .*; outcome unknown"):
        # (its unanswered ping said why)
        await asyncio.wait_for(
            other.txn(Txn(compares={ns + b"a": 0}, puts={ns + b"a": b"1"})), 20)
    # worker 0 is still stopped: this commit should go to etcd itself
    assert await other.txn(Txn(compares={ns + b"b": 0}, puts={ns + b"b": b"1"}))


async def test_commit_told_unknown_and_never_sent_is_not_applied_later(
        other: EtcdStore, owner: tuple[subprocess.Popen[str], Path]) -> None:
    p, sock = owner
    ns = b"esp/" + secrets.token_hex(6).encode() + b"/"
    key = ns + b"obj"
    await other.share_commits(sock, owner=False)
    assert await other.txn(Txn(puts={ns + b"warm": b"1"}))  # connected to worker 0
    assert (other._sharing.forwarded, other._sharing.direct) == (1, 0)  # type: ignore[union-attr]  # noqa: SLF001
    p.send_signal(signal.SIGSTOP)
    with pytest.raises(EtcdError, match="outcome unknown"):  # the client got its 500
        await other.txn(Txn(compares={key: 0}, puts={key: b"late"}))
    assert await other.get(key) is None  # ... and then saw the key absent
    p.send_signal(signal.SIGCONT)
    # a later commit through the resumed worker 0 (after the old frame, if it ran it): the
    # first ones go direct while the worker reconnects in the background
    shared = other._sharing  # noqa: SLF001
    assert isinstance(shared, etcd_share.SharedCommits)
    forwarded, i = shared.forwarded, 0
    while shared.forwarded == forwarded:
        i += 1
        assert await other.txn(Txn(compares={ns + b"probe%d" % i: 0},
                                   puts={ns + b"probe%d" % i: b"1"}))
        if shared._connecting is not None:  # noqa: SLF001
            await shared._connecting  # noqa: SLF001
    assert await other.get(key) is None, "applied after its caller was told it failed"
