"""The admin listener's Host allowlist against DNS rebinding (gateway/admin/hosts.py): which
Host values are answered, the setting that adds names, and the 421 a refused one gets."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.admin.hosts import allowed_names, host_allowed, host_guard


@pytest.mark.parametrize("host", [
    "127.0.0.1:9001", "127.0.0.1", "10.1.2.3:9001", "[::1]:9001", "[::1]", "localhost:9001",
    "LOCALHOST", "localhost.", "console.localhost:9001", "admin.example.com",
    "Admin.Example.COM:443", "gw1:9001"])
def test_addresses_localhost_and_configured_names_are_answered(host: str) -> None:
    names = allowed_names(["admin.example.com"], "gw1:9001")
    assert host_allowed(host, names)


@pytest.mark.parametrize("host", [
    "rebind.evil.example:9001", "rebind.evil.example", "localhost.evil.example",
    "evil-localhost:9001", "127.0.0.1.nip.io:9001", "127.1:9001", "", "example.com",
    # not host[:port]: read as ::1 / 127.0.0.1 before, and aiohttp then answered 500
    "[::1]evil.example", "[::1]evil.example:9001", "[::1]:evil", "[fe80::1%25x]",
    "[fe80::1%25evil.example]:9001", "fe80::1%x", "::1", "[::1", "127.0.0.1:evil"])
def test_other_names_are_refused(host: str) -> None:
    assert not host_allowed(host, allowed_names(["admin.example.com"], "0.0.0.0:9001"))


def test_a_star_answers_any_host() -> None:
    assert host_allowed("rebind.evil.example:9001", allowed_names(["*"], "127.0.0.1:9001"))


async def test_a_refused_host_gets_a_json_421_naming_the_setting() -> None:
    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(middlewares=[host_guard(allowed_names([], "127.0.0.1:9001"))])
    app.router.add_get("/metrics", ok)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        r = await client.get("/metrics", headers={"Host": "rebind.evil.example:9001"})
        assert r.status == 421
        err = (await r.json())["error"]
        assert err["code"] == "HostNotAllowed" and "[gateway] admin_hosts" in err["message"]
        assert "rebind.evil.example" in err["message"]
        r = await client.get("/metrics", headers={"Host": "localhost:9001"})
        assert r.status == 200 and await r.text() == "ok"
        r = await client.get("/nowhere", headers={"Host": "rebind.evil.example"})
        assert r.status == 421  # before routing: aiohttp's own 404 tells nothing either
        for odd in ("[::1]evil.example", "[fe80::1%25x]"):
            r = await client.get("/metrics", headers={"Host": odd})
            assert r.status == 421 and odd in (await r.json())["error"]["message"], odd
