"""Which request heads the node's lean front serves itself (`nodes.leanput.parse_lean_head`):
only a whole-shard PUT it understands exactly; anything else goes to aiohttp."""

from __future__ import annotations

import pytest

from nodes.leanput import LEAN_MAX_BODY, parse_lean_head

SID = "0" * 32 + ".1"
BASE = f"PUT /v1/shards/{SID} HTTP/1.1\r\nHost: n1\r\nX-Tessera-Date: 1.0"


def test_a_whole_shard_put_is_served_lean() -> None:
    req = parse_lean_head(f"{BASE}\r\nContent-Length: 100\r\nx-tessera-date: 2.0".encode())
    assert req is not None and req.target == f"/v1/shards/{SID}" and req.length == 100
    assert req.headers.getall("X-Tessera-Date") == ["1.0", "2.0"] and not req.close
    req = parse_lean_head(f"{BASE}\r\nContent-Length: 0\r\nConnection: close".encode())
    assert req is not None and req.close and req.length == 0


@pytest.mark.parametrize("head", [
    f"GET /v1/shards/{SID} HTTP/1.1\r\nContent-Length: 1",
    f"PUT /v1/shards/{SID} HTTP/1.0\r\nContent-Length: 1",
    f"PUT /v1/shards/{SID}?x=1 HTTP/1.1\r\nContent-Length: 1",
    "PUT /v1/shards/%61%61 HTTP/1.1\r\nContent-Length: 1",
    "PUT /v1/shards/../../etc/passwd HTTP/1.1\r\nContent-Length: 1",
    "PUT /v1/shards/.. HTTP/1.1\r\nContent-Length: 1",
    "PUT /v1/batch HTTP/1.1\r\nContent-Length: 1",
    f"PUT /v1/shards/{SID}/verify HTTP/1.1\r\nContent-Length: 1",
    f"{BASE}",                                                   # no length
    f"{BASE}\r\nContent-Length: {LEAN_MAX_BODY + 1}",            # too large to take whole
    f"{BASE}\r\nContent-Length: 1\r\nContent-Length: 1",
    f"{BASE}\r\nContent-Length: +1",
    f"{BASE}\r\nContent-Length: 1\r\nTransfer-Encoding: chunked",
    f"{BASE}\r\nContent-Length: 1\r\nExpect: 100-continue",
    f"{BASE}\r\nContent-Length: 1\r\nConnection: Upgrade",
    f"{BASE}\r\nContent-Length: 1\r\nBad Name: x",
    f"{BASE}\r\nContent-Length: 1\r\n folded",
    f"{BASE}\r\nContent-Length: 1\r\nX-A: a\nb",
    f"{BASE}\r\nContent-Length: 1\r\nX-A: \x00",
    f"{BASE}\r\nContent-Length: 1\r\nX-A: caf\u00e9",
])
def test_anything_else_goes_to_aiohttp(head: str) -> None:
    assert parse_lean_head(head.encode("utf-8")) is None


GET = f"GET /v1/shards/{SID}"
SIGNED = "\r\nHost: n1\r\nX-Tessera-Date: 1.0"


def test_a_shard_get_from_the_first_frame_is_served_lean() -> None:
    req = parse_lean_head(f"{GET} HTTP/1.1{SIGNED}".encode())
    assert req is not None and (req.method, req.path, req.query, req.count) == (
        "GET", f"/v1/shards/{SID}", "", None) and req.length == 0 and not req.close
    req = parse_lean_head(f"{GET}?first=0&count=16 HTTP/1.1{SIGNED}\r\nConnection: close"
                          .encode())
    assert req is not None and req.target == f"/v1/shards/{SID}?first=0&count=16"
    assert (req.path, req.query, req.count, req.close) == (
        f"/v1/shards/{SID}", "first=0&count=16", 16, True)


@pytest.mark.parametrize("head", [
    f"{GET}?first=1&count=1 HTTP/1.1",             # a later frame: aiohttp's
    f"{GET}?count=1&first=0 HTTP/1.1",
    f"{GET}?first=0 HTTP/1.1",
    f"{GET}?first=0&count= HTTP/1.1",
    f"{GET}?first=0&count=1&x=1 HTTP/1.1",
    f"{GET}?first=0&count=-1 HTTP/1.1",
    f"{GET}?first=0&count={'9' * 20} HTTP/1.1",
    f"{GET} HTTP/1.0",
    f"HEAD /v1/shards/{SID} HTTP/1.1",
    f"GET /v1/shards/{SID}/stat HTTP/1.1",
    "GET /v1/shards HTTP/1.1",
    "GET /v1/shards/ HTTP/1.1",
    "GET /v1/shards/%61 HTTP/1.1",
    f"{GET} HTTP/1.1\r\nContent-Length: 0",        # a GET with a length, even 0
    f"{GET} HTTP/1.1\r\nTransfer-Encoding: chunked",
    f"{GET} HTTP/1.1\r\nConnection: Upgrade",
])
def test_other_gets_go_to_aiohttp(head: str) -> None:
    assert parse_lean_head(f"{head}{SIGNED}".encode()) is None
