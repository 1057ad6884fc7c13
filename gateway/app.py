"""The gateway process: the S3 listener and the admin listener over one `Cluster`."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from gateway.metrics import Metrics
from gateway.metrics_cluster import ClusterGauges
from gateway.s3.access_log import may_deliver
from gateway.s3.server import S3Server
from gateway.site import GuardedTCPSite
from storage.accesslog import AccessLogBuffer
from storage.cluster import Cluster
from storage.config import Config
from storage.workers.accesslog import AccessLogDelivery, AccessLogStager
from storage.workers.runner import WorkerRunner

log = logging.getLogger("tessera.gateway")
MAX_FIELD_BYTES = 16 * 1024
KEEPALIVE_TIMEOUT_S = 75.0  # idle keep-alive connections are closed after this


def split_hostport(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


def create_s3_app(server: S3Server) -> web.Application:
    app = web.Application(client_max_size=1024 * 1024, handler_args={
        "max_field_size": MAX_FIELD_BYTES, "max_line_size": MAX_FIELD_BYTES,
        "keepalive_timeout": KEEPALIVE_TIMEOUT_S})
    # Every path, newlines included (an object key may hold a newline; "." misses it).
    app.router.add_route("*", r"/{tail:[\s\S]*}", server.handle,
                         expect_handler=server.expect)

    async def stamp(request: web.Request, response: web.StreamResponse) -> None:
        rid = request.get("request_id")
        if rid and "x-amz-request-id" not in response.headers:
            response.headers["x-amz-request-id"] = rid
            response.headers["x-amz-id-2"] = "tessera"
        response.headers.update(request.get("cors_headers") or {})

    app.on_response_prepare.append(stamp)
    return app


def create_admin_app(cluster: Cluster, metrics: Metrics) -> web.Application:
    from gateway.admin.api import AdminApi

    app = web.Application(client_max_size=1024 * 1024)
    api = AdminApi(cluster)
    from gateway.admin.status import register_status

    register_status(app, cluster)  # before the admin API's catch-all route
    from gateway.admin.nodes import register_nodes

    register_nodes(app, api)  # membership routes, also before the catch-all
    from gateway.admin.volumes import register_volumes

    register_volumes(app, api)  # a tenant's block volumes, also before the catch-all
    from gateway.admin.inventory import register_inventory

    register_inventory(app, api)  # buckets, queues, audit log, also before the catch-all
    from gateway.console.routes import register_console

    register_console(app, api, metrics)  # the web console and its sessions (/console/)
    from gateway.admin.settings import register_settings

    register_settings(app, api)  # runtime settings (`tessera config`), also before it
    from gateway.admin.kms import register_kms

    register_kms(app, api)  # a tenant's KMS keys, also before the catch-all
    api.register(app)

    async def prom(_: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": metrics.content_type})

    app.router.add_get("/metrics", prom)
    return app


async def serve(cfg: Config, ready_line: bool = True) -> None:
    """Run the gateway until SIGTERM/SIGINT."""
    cluster = await Cluster.open(cfg)
    metrics = Metrics()
    metrics.watch_integrity(lambda: cluster.stripes.lies.found)
    access_logs = AccessLogBuffer(cluster, cfg.access_log.max_buffered)
    server = S3Server(cluster, cfg.gateway, metrics, access_logs)
    runners = []
    stager = WorkerRunner()  # every gateway stages its own access-log records (no lease)
    try:
        from storage.workers.runner import gateway_holder, start_workers

        workers = start_workers(cluster)
        workers.start(AccessLogDelivery(cluster, cfg.access_log.flush_interval_s,
                                        may_deliver=may_deliver))
        stager.start(AccessLogStager(access_logs, cfg.access_log.stage_interval_s))
        gauges = ClusterGauges(cluster, gateway_holder(cluster))
        metrics.watch_cluster(gauges)
        gauges.start()
        for app, addr in ((create_s3_app(server), cfg.gateway.listen),
                          (create_admin_app(cluster, metrics), cfg.gateway.admin_listen)):
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            host, port = split_hostport(addr)
            await GuardedTCPSite(runner, host, port,
                                 header_timeout_s=cfg.gateway.header_timeout_s).start()
            runners.append(runner)
        if ready_line:
            print(f"gateway ready on http://{cfg.gateway.listen} "
                  f"(admin http://{cfg.gateway.admin_listen})", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await gauges.stop()
        await workers.stop()
    finally:
        for r in runners:
            await r.cleanup()
        await stager.stop()
        try:  # a clean shutdown keeps every access-log record (see storage/accesslog.py)
            await access_logs.stage()
        finally:
            await cluster.close()
