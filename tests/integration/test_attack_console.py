"""Outside-attacker checks on the web console's login: a burst of concurrent guesses is held
to the per-address failure limit, and a secret typed into the access-key field never reaches
the audit log (nor the console's audit tab, which shows it)."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections import Counter

import aiohttp
import pytest
import requests

from gateway.admin.audit import UNKNOWN_KEY
from gateway.console.sessions import LOGIN_FAILURES, LOGIN_WINDOW_S
from ops.admincli import CliError, admin_request
from tests.integration.cluster import LocalCluster, files_holding

BURST = 100


async def _burst(url: str, source: str) -> tuple[Counter[int], set[str | None]]:
    """BURST wrong logins at once from the loopback address `source`, each naming an access
    key no cache holds, so every check awaits the metadata store: the statuses, and the
    Retry-After values of the 429s."""
    conn = aiohttp.TCPConnector(limit=0, local_addr=(source, 0))
    async with aiohttp.ClientSession(connector=conn) as s:
        async def guess() -> tuple[int, str | None]:
            body = {"access_key": "AK" + uuid.uuid4().hex[:18].upper(), "secret_key": "guess"}
            async with s.post(url, json=body) as r:
                return r.status, r.headers.get("Retry-After")

        got = await asyncio.gather(*[guess() for _ in range(BURST)])
        return Counter(st for st, _ in got), {ra for st, ra in got if st == 429}


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
                               and 1 <= int(ra) <= LOGIN_WINDOW_S for ra in retry_after), \
        retry_after


def _audit(c: LocalCluster) -> list[dict]:
    return [json.loads(line) for line in
            (c.data / "audit" / "audit.log").read_text().splitlines()]


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


class _SourceAdapter(requests.adapters.HTTPAdapter):
    """Connections from a given loopback address."""

    def __init__(self, source: str) -> None:
        self.source = source
        super().__init__()

    def init_poolmanager(self, *args: object, **kwargs: object) -> None:
        kwargs["source_address"] = (self.source, 0)
        super().init_poolmanager(*args, **kwargs)  # type: ignore[arg-type]
