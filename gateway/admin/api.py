"""The admin API (placeholder routes filled by the tenants issue): health and cluster state."""

from __future__ import annotations

from aiohttp import web

from storage.cluster import Cluster


class AdminApi:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def register(self, app: web.Application) -> None:
        app.router.add_get("/health", self.health)

    async def health(self, _: web.Request) -> web.Response:
        states = {nid: s.state for nid, s in self.cluster.health.states.items()}
        return web.json_response({"status": "ok", "nodes": states})
