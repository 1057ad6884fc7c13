"""A broken etcd watch stream moves only that watch to another member: requests keep going
to the Raft leader the store found (a watch break used to move every request off it until
the next election)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from storage.metadata.etcd import EtcdStore


class _Stream:
    def __init__(self, broken: bool) -> None:
        self.broken = broken

    async def __aenter__(self) -> Any:
        if self.broken:
            raise aiohttp.ClientConnectionError("reset")  # the first stream breaks
        await asyncio.Event().wait()  # the next one holds
        return None

    async def __aexit__(self, *exc: object) -> bool:
        return False


class _Session:
    """Stands in for aiohttp's session: records where each watch stream was opened."""

    def __init__(self) -> None:
        self.urls: list[str] = []
        self.headers: list[dict[str, str]] = []

    def post(self, url: str, **kw: Any) -> _Stream:
        self.urls.append(url)
        self.headers.append(dict(kw.get("headers") or {}))
        return _Stream(len(self.urls) == 1)


async def test_a_broken_watch_leaves_requests_on_the_leader() -> None:
    session = _Session()
    store = EtcdStore(("http://a", "http://leader", "http://c"), session, "/v3")  # type: ignore[arg-type]
    store._current = 1  # the leader, as found at open
    task = asyncio.ensure_future(anext(store.watch_prefix(b"R")))
    try:
        async with asyncio.timeout(10):  # until the watch reopened after its break
            while len(session.urls) < 2:
                await asyncio.sleep(0.01)
        assert session.urls[0].startswith("http://leader/")
        assert session.urls[1].startswith("http://c/")  # the watch moved on
        assert store.endpoint == "http://leader"  # requests did not
    finally:
        task.cancel()


async def test_every_watch_asks_to_be_ended_by_a_member_without_a_leader() -> None:
    """A member cut off from its cluster keeps a watch open and silent unless the client
    asks for `hasleader` (etcd-io/etcd#7593, #10819); grpc-gateway passes a
    `Grpc-Metadata-*` header on as that gRPC metadata."""
    session = _Session()
    store = EtcdStore(("http://a", "http://b"), session, "/v3")  # type: ignore[arg-type]
    task = asyncio.ensure_future(anext(store.watch_prefix(b"R")))
    try:
        async with asyncio.timeout(10):  # the first stream broke, the second is open
            while len(session.urls) < 2:
                await asyncio.sleep(0.01)
        assert all(h.get("Grpc-Metadata-hasleader") == "true" for h in session.headers)
    finally:
        task.cancel()
