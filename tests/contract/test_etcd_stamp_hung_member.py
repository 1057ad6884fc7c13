"""The auth change watch must not answer from memory for long on an etcd member that
stopped answering (hung, or cut off from its cluster: etcd-io/etcd#7593, #10819): a key
revoked through a healthy member would be accepted from this gateway's memory, and so would
every later change. Own 3-member cluster (a member is SIGSTOPped)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from storage.keyspace import access_key_key
from storage.metadata.etcd import EtcdStore
from storage.metadata.etcd_stamp import MAX_AGE_S
from tests.contract.conftest import start_etcd

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd is not installed")


async def _live(store: EtcdStore) -> int:
    """Wait for the store's watch to be confirmed (polling the condition)."""
    until = time.monotonic() + 60
    while not store._stamp._live:  # noqa: SLF001 - the watch's state is what is tested
        assert time.monotonic() < until, "the watch was never confirmed"
        await store.auth_stamp()
        await asyncio.sleep(0.02)
    return await store.auth_stamp()


async def test_a_watch_on_a_hung_member_does_not_answer_past_its_bound(tmp_path: Path) -> None:
    cluster = start_etcd(tmp_path, token="hung")
    try:
        eps = cluster.endpoints
        a, b = await EtcdStore.open(eps, cluster.client_tls), await EtcdStore.open(eps, cluster.client_tls)
        try:
            b._current = next(i for i in range(3) if i != a._current)  # noqa: SLF001
            before = await _live(b)  # its watch (and its reads) on a follower
            member = next(m.name for m in cluster.members if m.client_url == b.endpoint)
            os.kill(cluster.procs[member].pid, signal.SIGSTOP)
            try:
                await a.put(access_key_key("HUNG"), b"revoked")  # A's leader is healthy
                revoked = await a._read_stamp()  # noqa: SLF001
                assert revoked > before
                # the bound is the property: a stamp asked for once it has passed is current
                await asyncio.sleep(MAX_AGE_S)
                assert await b.auth_stamp() >= revoked, "a hung member's watch was believed"
                # and the watch is re-opened on a member that answers, live again
                assert await _live(b) >= revoked
                assert b.endpoint != next(m.client_url for m in cluster.members
                                          if m.name == member)
            finally:
                os.kill(cluster.procs[member].pid, signal.SIGCONT)
        finally:
            await a.close()
            await b.close()
    finally:
        cluster.stop()
