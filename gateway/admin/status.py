"""`GET /admin/v1/status` (also `/status`; admin SigV4 like every admin route): the cluster's
durability picture from storage/clusterstatus.py as JSON."""

from __future__ import annotations

from aiohttp import web

from gateway.admin.auth import AdminError, authenticate_admin
from storage.cluster import Cluster
from storage.clusterstatus import collect_status


def register_status(app: web.Application, cluster: Cluster) -> None:
    """Add `GET /admin/v1/status` and `GET /status` (admin-authenticated) to the admin app."""
    async def handle(request: web.Request) -> web.Response:
        try:
            await authenticate_admin(request, cluster)
        except AdminError as exc:
            return web.json_response({"error": {"code": exc.code, "message": exc.message}},
                                     status=exc.status)
        return web.json_response(await collect_status(cluster))

    app.router.add_get("/admin/v1/status", handle)
    app.router.add_get("/status", handle)
