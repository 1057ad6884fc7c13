"""tenant21: a header-signed admin change is served once (gateway/admin/once.py). Two
gateways over one metadata store (two processes' stores on one SQLite file, as two
gateways of a set share etcd): the very bytes of a signed "create tenant" replayed to
either are 403 RequestReplayed; a signed GET replays; the admin CLI's requests differ."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from gateway.admin import once
from gateway.app import create_admin_app
from gateway.metrics import Metrics
from gateway.s3.sigv4_sign import sign_headers
from ops import admincli
from ops.admincli import CliError, admin_request
from ops.localports import free_port
from storage.cluster import Cluster
from storage.keyspace import span
from storage.metadata.sqlite import SqliteStore
from storage.testing.simnodes import SimNodes
from tests.inproc import sim_config, wired_cluster


@contextlib.asynccontextmanager
async def _admin(cluster: Cluster) -> AsyncIterator[str]:
    """The admin API of `cluster` served on a free loopback port: its base URL."""
    runner = web.AppRunner(create_admin_app(cluster, Metrics()))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _send(url: str, method: str, headers: dict[str, str], body: bytes) -> tuple[int, str]:
    req = urllib.request.Request(url, data=body or None, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310
            return resp.status, ""
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())["error"]["code"]


async def test_a_signed_change_is_served_once_by_every_gateway(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    cfg = sim_config(tmp_path, 0)
    nodes = SimNodes(list(cfg.nodes))
    meta_a = await SqliteStore.open(tmp_path / "meta.db")
    meta_b = await SqliteStore.open(tmp_path / "meta.db")
    try:
        async with wired_cluster(tmp_path, cfg, nodes, meta_a, "t") as a, \
                wired_cluster(tmp_path, cfg, nodes, meta_b, "u") as b, \
                _admin(a) as url_a, _admin(b) as url_b:
            adm = await a.tenants.create_key("_admin", role="admin")
            body = json.dumps({"name": "acme"}).encode()
            hdrs = sign_headers("POST", url_a + "/admin/v1/tenants",
                                {"Content-Type": "application/json"}, body,
                                adm.access_key, adm.secret_key)
            for url, want in ((url_a, (201, "")), (url_b, (403, "RequestReplayed")),
                              (url_a, (403, "RequestReplayed"))):
                got = await asyncio.to_thread(_send, url + "/admin/v1/tenants", "POST",
                                              hdrs, body)
                assert got == want, (url, got)
            get = sign_headers("GET", url_a + "/admin/v1/tenants", {}, b"",
                               adm.access_key, adm.secret_key)
            for url in (url_a, url_b, url_a):  # reads change nothing: they may replay
                assert (await asyncio.to_thread(_send, url + "/admin/v1/tenants", "GET",
                                                get, b""))[0] == 200
            env = {"TESSERA_ADMIN_URL": url_b, "TESSERA_ADMIN_ACCESS_KEY": adm.access_key,
                   "TESSERA_ADMIN_SECRET_KEY": adm.secret_key}
            for _ in range(2):  # equal changes in one second: the CLI's nonce tells them apart
                await asyncio.to_thread(admin_request, "POST", "/keys", {"tenant": "acme"},
                                        env=env)
            assert len(await a.tenants.list_keys("acme")) == 2
            # a deleted tenant's name is taken again only with reuse_name (tenant21)
            await asyncio.to_thread(admin_request, "POST", "/tenants", {"name": "gone"},
                                    env=env)
            made = await asyncio.to_thread(admin_request, "POST", "/keys", {"tenant": "gone"},
                                           env=env)
            await asyncio.to_thread(admin_request, "DELETE", "/tenants/gone", env=env)
            with pytest.raises(CliError, match="reuse-name"):
                await asyncio.to_thread(admin_request, "POST", "/tenants", {"name": "gone"},
                                        env=env)
            # ...nor its canonical id, by another tenant (tenant22)
            with pytest.raises(CliError, match="deleted tenant.*Conflict"):
                await asyncio.to_thread(admin_request, "PATCH", "/tenants/acme",
                                        {"canonical_id": "gone"}, env=env)
            await asyncio.to_thread(admin_request, "POST", "/tenants",
                                    {"name": "gone", "reuse_name": True}, env=env)
            # the new "gone" lists none of the old one's (revoked) keys (tenant22)
            listed = await asyncio.to_thread(admin_request, "GET", "/keys",
                                             query={"tenant": "gone"}, env=env)
            assert listed["keys"] == [], listed
            every = await asyncio.to_thread(admin_request, "GET", "/keys", env=env)
            assert {k["access_key_id"]: k["tenant_deleted"] for k in every["keys"]
                    if k["tenant"] == "gone"} == {made["access_key_id"]: True}
            for name, value in env.items():  # `tessera key list`'s table says whose it is
                monkeypatch.setenv(name, value)
            await asyncio.to_thread(admincli._key, argparse.Namespace(
                action="list", tenant=None, json=False))
            row = [ln for ln in capsys.readouterr().out.splitlines()
                   if made["access_key_id"] in ln]
            assert len(row) == 1 and "gone (deleted)" in row[0], row
    finally:
        await meta_a.close()
        await meta_b.close()


async def test_claims_past_their_time_are_pruned(tmp_path: Path) -> None:
    """Claims go once no gateway accepts their date (2 x the skew ceiling, whatever each
    gateway's own `max_skew_s`): a later claim deletes them."""
    meta = await SqliteStore.open(tmp_path / "meta.db")
    try:
        assert await once.claim(meta, "aa", "20261207T120000Z", now=1.0)
        assert not await once.claim(meta, "aa", "20261207T120000Z", now=1.0)
        signed = 1796644800  # 20261207T120000Z
        assert await once.claim(meta, "bb", "20261207T130000Z", now=signed + once.HOLD_S + 1)
        left = await meta.range(*span(once._BASE), limit=10)
        assert len(left) == 1  # "aa" went
    finally:
        await meta.close()


async def test_a_claim_inside_its_window_outlives_later_claims(tmp_path: Path) -> None:
    """review21g: a later claim prunes only claims past their hold, never one a gateway may
    still accept: the replay of "aa" to another gateway (its own store, so not answered
    from the first one's memory) stays refused up to its last second. tenant22: the hold
    is 2 x the ceiling of every gateway's `max_skew_s` (a gateway with a smaller one must
    not prune a claim whose date a gateway with a larger one still accepts)."""
    meta_a = await SqliteStore.open(tmp_path / "meta.db")
    meta_b = await SqliteStore.open(tmp_path / "meta.db")
    try:
        signed = 1796644800  # 20261207T120000Z; its claim lasts until signed + 7200
        assert once.HOLD_S == 2 * 3600
        assert await once.claim(meta_a, "aa", "20261207T120000Z", now=signed)
        assert await once.claim(meta_a, "bb", "20261207T135959Z", now=signed + 7199)
        assert not await once.claim(meta_b, "aa", "20261207T120000Z", now=signed + 7199)
        once._SEEN.clear()
        assert await once.claim(meta_a, "cc", "20261207T140000Z", now=signed + 7200)
        assert not await once.claim(meta_b, "aa", "20261207T120000Z", now=signed + 7200)
    finally:
        await meta_a.close()
        await meta_b.close()


async def test_a_replay_this_process_saw_costs_no_store_write(tmp_path: Path) -> None:
    """tenant22: replaying a captured change at a gateway costs it no metadata transaction
    (on etcd a Raft write): the process remembers the claims it made. A claim
    given back (`release`) is forgotten there too."""
    meta = await SqliteStore.open(tmp_path / "meta.db")
    try:
        plain, txns = meta.txn, []

        async def txn(t):  # type: ignore[no-untyped-def]
            txns.append(t)
            return await plain(t)
        meta.txn = txn  # type: ignore[method-assign]
        assert await once.claim(meta, "aa", "20261207T120000Z")
        assert len(txns) == 1
        for _ in range(3):
            assert not await once.claim(meta, "aa", "20261207T120000Z")
        assert len(txns) == 1
        await once.release(meta, once.claim_key("aa", "20261207T120000Z"))
        assert await once.claim(meta, "aa", "20261207T120000Z")  # served again
    finally:
        await meta.close()


def test_max_skew_s_is_held_to_the_ceiling_claims_are_kept_for() -> None:
    """tenant22: a gateway accepting dates older than claims are kept would serve a replay
    whose claim another gateway pruned: [gateway] max_skew_s above MAX_SKEW_S is refused."""
    from storage.config import ConfigError, config_from_mapping
    from storage.config_sections import MAX_SKEW_S

    raw = {"profiles": {"standard": {"k": 4, "m": 2}},
           "nodes": [{"id": f"n{z}{i}", "zone": f"az{z}", "address": f"127.0.{z}.{i}:1"}
                     for z in (1, 2, 3) for i in (1, 2, 3)]}
    assert config_from_mapping({**raw, "gateway": {"max_skew_s": MAX_SKEW_S}}).gateway \
        .max_skew_s == MAX_SKEW_S
    for bad in (MAX_SKEW_S + 1, 0, 900.5, True):
        with pytest.raises(ConfigError, match="max_skew_s"):
            config_from_mapping({**raw, "gateway": {"max_skew_s": bad}})


async def test_a_change_that_failed_may_be_sent_again(tmp_path: Path) -> None:
    """review21g: the claim is taken before the handler runs. A change that failed on the
    server (503: a metadata blip) did nothing; the client's retry of the very same signed
    request (an HTTP library's retry on 503, or within the second by an SDK) must be served,
    not 403 RequestReplayed "served already" with the change never made."""
    from storage.errors import StorageError

    cfg = sim_config(tmp_path, 0)
    nodes = SimNodes(list(cfg.nodes))
    meta = await SqliteStore.open(tmp_path / "meta.db")
    try:
        async with wired_cluster(tmp_path, cfg, nodes, meta, "t") as a, _admin(a) as url:
            adm = await a.tenants.create_key("_admin", role="admin")
            plain, failed = a.tenants.create, []

            async def create(name: str, reuse: bool = False):  # type: ignore[no-untyped-def]
                if not failed:
                    failed.append(name)
                    raise StorageError("metadata store blip")
                return await plain(name, reuse=reuse)
            a.tenants.create = create  # type: ignore[method-assign]
            body = json.dumps({"name": "acme"}).encode()
            hdrs = sign_headers("POST", url + "/admin/v1/tenants",
                                {"Content-Type": "application/json"}, body,
                                adm.access_key, adm.secret_key)
            first = await asyncio.to_thread(_send, url + "/admin/v1/tenants", "POST", hdrs, body)
            assert first[0] == 503, first
            again = await asyncio.to_thread(_send, url + "/admin/v1/tenants", "POST", hdrs, body)
            assert again == (201, ""), again
    finally:
        await meta.close()
