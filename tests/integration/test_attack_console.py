"""Outside-attacker checks on the web console's login: a burst of concurrent guesses is held
to the per-address failure limit, and a secret typed into the access-key field never reaches
the audit log (nor the console's audit tab, which shows it); a name rebound to the admin
listener (DNS rebinding) gets no answer."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter

import aiohttp
import pytest
import requests

from gateway.admin.audit import UNKNOWN_KEY
from gateway.console.sessions import LOGIN_FAILURES, LOGIN_WINDOW_S
from ops.admincli import CliError, admin_request
from tests.integration.cluster import LocalCluster, audit_log, files_holding

BURST = 100


async def _burst(url: str, source: str) -> tuple[Counter[int], set[tuple[str | None, str]]]:
    """BURST wrong logins at once from the loopback address `source`, each naming an access
    key no cache holds, so every check awaits the metadata store: the statuses, and the
    Retry-After values of the 429s with their error messages."""
    conn = aiohttp.TCPConnector(limit=0, local_addr=(source, 0))
    async with aiohttp.ClientSession(connector=conn) as s:
        async def guess() -> tuple[int, str | None, str]:
            body = {"access_key": "AK" + uuid.uuid4().hex[:18].upper(), "secret_key": "guess"}
            async with s.post(url, json=body) as r:
                doc = await r.json()
                return r.status, r.headers.get("Retry-After"), doc["error"]["message"]

        got = await asyncio.gather(*[guess() for _ in range(BURST)])
        return (Counter(st for st, _, _ in got),
                {(ra, msg) for st, ra, msg in got if st == 429})


def test_a_burst_of_concurrent_guesses_is_held_to_the_failure_limit(
        cluster: LocalCluster) -> None:
    """The limit was checked before the handler awaited the key lookup and counted after it:
    100 concurrent guesses from one address were all checked (100 x 403, not 10)."""
    source = f"127.{random.randrange(100, 250)}.{random.randrange(256)}.{random.randrange(1, 255)}"
    url = f"http://127.0.0.1:{cluster.admin_port}/console/api/login"
    got, retry_after = asyncio.run(_burst(url, source))
    assert got[403] <= LOGIN_FAILURES and got[403] + got[429] == BURST, got
    # each 429 says when to come back (RFC 6585 4): a whole number of seconds in the window
    assert retry_after and all(ra is not None and ra.isdigit()
                               and 1 <= int(ra) <= LOGIN_WINDOW_S for ra, _ in retry_after), \
        retry_after
    # the console shows the message, not the header: it names the same wait in seconds
    assert all(f"try again in {ra} s" in msg for ra, msg in retry_after), retry_after


def _audit(c: LocalCluster) -> list[dict]:
    return audit_log(c.data)


def test_a_secret_in_the_access_key_field_never_reaches_the_audit_log(
        cluster: LocalCluster) -> None:
    """Fields swapped at the login form, or in a client's configuration (the secret as the
    access key id of a SigV4 signature): the refusal is audited under "unknown-key", not the
    text that names no key, which went to the audit log and the console's audit tab. A wrong
    secret for a real key is still audited under that key."""
    source = f"127.{random.randrange(100, 250)}.{random.randrange(256)}.{random.randrange(1, 255)}"
    ak, sk = cluster.env["TESSERA_ADMIN_ACCESS_KEY"], cluster.env["TESSERA_ADMIN_SECRET_KEY"]
    with requests.Session() as s:  # from an address of its own: no other test's limit
        s.mount("http://", _SourceAdapter(source))
        url = f"http://127.0.0.1:{cluster.admin_port}/console/api/login"
        swapped = s.post(url, json={"access_key": sk, "secret_key": ak}, timeout=30)
        wrong = s.post(url, json={"access_key": ak, "secret_key": "not-" + sk[4:]}, timeout=30)
    assert swapped.status_code == wrong.status_code == 403
    with pytest.raises(CliError, match="InvalidAccessKeyId|SignatureDoesNotMatch"):
        admin_request("GET", "/tenants", env={**cluster.env, "TESSERA_ADMIN_ACCESS_KEY": sk,
                                              "TESSERA_ADMIN_SECRET_KEY": ak})
    assert files_holding(cluster.data / "audit", [sk.encode()]) == []
    logins = [e for e in _audit(cluster) if e.get("remote") == source]
    assert [e["who"] for e in logins] == [UNKNOWN_KEY, ak]
    assert any(e["action"] == "tenant.list" and e["who"] == UNKNOWN_KEY
               and e["result"].startswith("denied:") for e in _audit(cluster))


REBOUND = "rebind.attacker.example"  # a name a web page pointed at the admin listener


def test_a_rebound_host_name_is_refused_on_every_admin_route(cluster: LocalCluster) -> None:
    """DNS rebinding: a page the operator opens points its own name at 127.0.0.1 and reads
    the admin listener same-origin (its Host is the page's name). /metrics (tenant names and
    traffic), /health (the node list) and the console answered it; now only addresses,
    localhost and configured names are answered. The CLI and scrapers keep working."""
    port = cluster.admin_port
    source = f"127.{random.randrange(100, 250)}.{random.randrange(256)}.{random.randrange(1, 255)}"
    with requests.Session() as s:  # from an address of its own: no other test's limit
        s.mount("http://", _SourceAdapter(source))
        url = f"http://127.0.0.1:{port}"
        for method, path in [("GET", "/metrics"), ("GET", "/health"), ("GET", "/console/"),
                             ("GET", "/console/api/session"), ("GET", "/admin/v1/tenants"),
                             ("HEAD", "/metrics"), ("GET", "/no/such/route")]:
            r = s.request(method, url + path, headers={"Host": f"{REBOUND}:{port}"},
                          timeout=30)
            assert r.status_code == 421, (path, r.status_code, r.text[:200])
            if method == "GET":
                err = r.json()["error"]
                assert err["code"] == "HostNotAllowed" and "admin_hosts" in err["message"]
                assert "tessera_" not in r.text and "zone" not in r.text
        # failed logins through the rebound name were counted against the operator's own
        # address: ten locked the console login out for everyone there
        bad = {"access_key": cluster.env["TESSERA_ADMIN_ACCESS_KEY"], "secret_key": "guess"}
        for _ in range(LOGIN_FAILURES + 2):
            r = s.post(url + "/console/api/login", json=bad, timeout=30,
                       headers={"Host": REBOUND, "Origin": f"http://{REBOUND}:{port}"})
            assert r.status_code == 421, r.text
        good = {"access_key": cluster.env["TESSERA_ADMIN_ACCESS_KEY"],
                "secret_key": cluster.env["TESSERA_ADMIN_SECRET_KEY"]}
        assert s.post(url + "/console/api/login", json=good, timeout=30).status_code == 200
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}",
                     f"console.localhost:{port}"):
            r = s.get(url + "/metrics", headers={"Host": host}, timeout=30)
            assert r.status_code == 200 and "tessera_" in r.text, host
    assert admin_request("GET", "/tenants", env=cluster.env)  # the CLI's address URL


class _SourceAdapter(requests.adapters.HTTPAdapter):
    """Connections from a given loopback address."""

    def __init__(self, source: str) -> None:
        self.source = source
        super().__init__()

    def init_poolmanager(self, *args: object, **kwargs: object) -> None:
        kwargs["source_address"] = (self.source, 0)
        super().init_poolmanager(*args, **kwargs)  # type: ignore[arg-type]
