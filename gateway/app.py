"""The gateway process: the S3 listener and the admin listener over one `Cluster`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from gateway.admin.headlimit import malformed_answer as admin_malformed
from gateway.admin.headlimit import too_large_answer as admin_head_refusal
from gateway.balance import ConnSlots, WorkerRole, split_hostport
from gateway.metrics import Metrics, merge_expositions
from gateway.metrics_cluster import ClusterGauges
from gateway.s3.access_log import may_deliver
from gateway.s3.headlimit import malformed_answer as s3_malformed
from gateway.s3.headlimit import too_large_answer as s3_head_refusal
from gateway.s3.request_keys import CORS_HEADERS, FIRST_BYTE, REQUEST_ID
from gateway.s3.server import S3Server
from gateway.site import BalancedTCPSite, GuardedTCPSite
from storage.accesslog import AccessLogBuffer
from storage.activity import CLIENTS, SharedActivity
from storage.cluster import Cluster
from storage.config import Config
from storage.metadata.etcd_share import SOCKET_NAME
from storage.sharedhealth import SharedHealth
from storage.workers.accesslog import AccessLogStager
from storage.workers.runner import WorkerRunner

log = logging.getLogger("tessera.gateway")
MAX_FIELD_BYTES = 16 * 1024
KEEPALIVE_TIMEOUT_S = 75.0  # idle keep-alive connections are closed after this
CLIENT_MAX_BYTES = 1024 * 1024  # what `request.read()`/`post()` accept (POST upload forms)


def _stamp(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """What every S3 response carries, set as it is prepared: the request id, CORS headers,
    and the first-byte time the access log reports."""
    request.setdefault(FIRST_BYTE, time.perf_counter())  # the access log's turn-around
    rid = request.get(REQUEST_ID)
    if rid and "x-amz-request-id" not in response.headers:
        response.headers["x-amz-request-id"] = rid
        response.headers["x-amz-id-2"] = "tessera"
    cors_headers = request.get(CORS_HEADERS)
    if cors_headers:
        response.headers.update(cors_headers)


class S3Request(web.BaseRequest):
    """A request on the S3 listener, stamped by `_stamp` as its response is prepared.

    Its `get`, `setdefault` and `pop` read the request's state dict directly: the
    `Mapping` mixins aiohttp's request inherits go through `__getitem__` and raise and
    catch a KeyError for every key not set (~0.5 us each; the pipeline asks for several
    unset keys per request). Same results: the state dict is what `__getitem__` reads."""

    _MISSING: Any = object()

    def get(self, key: Any, default: Any = None) -> Any:
        return self._state.get(key, default)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        return self._state.setdefault(key, default)

    def pop(self, key: Any, default: Any = _MISSING) -> Any:
        if default is S3Request._MISSING:
            return self._state.pop(key)
        return self._state.pop(key, default)

    async def _prepare_hook(self, response: web.StreamResponse) -> None:
        _stamp(self, response)


def create_s3_server(server: S3Server) -> web.Server:
    """The S3 listener's request handler factory: every request goes to `server.handle`.

    A low-level `web.Server`, not an `Application`: the one catch-all route needed no
    router (a regex match and a match-info dict per request), no per-request signal for
    the response stamp and no `Expect:` dispatch (`S3Server._continue` answers it once the
    request is authorized)."""
    loop = asyncio.get_running_loop()

    def make_request(message: Any, payload: Any, protocol: Any, writer: Any,
                     task: asyncio.Task[None]) -> S3Request:
        return S3Request(message, payload, protocol, writer, task, loop,
                         client_max_size=CLIENT_MAX_BYTES)

    return web.Server(server.handle, request_factory=make_request, loop=loop, access_log=None,
                      max_field_size=MAX_FIELD_BYTES, max_line_size=MAX_FIELD_BYTES,
                      keepalive_timeout=KEEPALIVE_TIMEOUT_S, auto_decompress=False)


def s3_runner(server: S3Server) -> web.ServerRunner:
    """A runner of `create_s3_server`, to bind sites to (call from the running loop)."""
    return web.ServerRunner(create_s3_server(server), handle_signals=False)


def create_admin_app(cluster: Cluster, metrics: Metrics,
                     peers: Sequence[Path] = ()) -> web.Application:
    from gateway.admin.api import AdminApi
    from gateway.admin.hosts import allowed_names, host_guard

    g = cluster.cfg.gateway  # every answer, aiohttp's own 404s too, first checks Host
    app = web.Application(client_max_size=1024 * 1024, middlewares=[
        host_guard(allowed_names(g.admin_hosts, g.admin_listen))])
    api = AdminApi(cluster)
    from gateway.admin.status import register_status

    register_status(app, cluster)  # before the admin API's catch-all route
    from gateway.admin.nodes import register_nodes

    register_nodes(app, api)  # membership routes, also before the catch-all
    from gateway.admin.volumes import register_volumes

    register_volumes(app, api)  # a tenant's block volumes, also before the catch-all
    from gateway.admin.inventory import register_inventory

    register_inventory(app, api)  # buckets, queues, audit log, also before the catch-all
    from gateway.admin.settings import register_settings

    register_settings(app, api)  # runtime settings (`tessera config`), also before it
    from gateway.admin.kms import register_kms

    register_kms(app, api)  # a tenant's KMS keys, also before the catch-all

    async def exposition() -> bytes:
        """This gateway's metrics text, summed over its worker processes."""
        body = metrics.render()
        if peers:
            body = merge_expositions([body, *await asyncio.gather(*map(_peer_metrics, peers))])
        return body

    from gateway.console.routes import register_console
    from gateway.console.samples import SAMPLE_NAMES

    async def samples() -> bytes:
        """The samples the console's charts read, of every worker (the reader adds them
        up): no whole exposition rendered, merged and parsed every tick."""
        own = metrics.render(SAMPLE_NAMES)
        if not peers:
            return own
        return b"".join([own, *await asyncio.gather(
            *(_peer_metrics(p, SAMPLE_NAMES) for p in peers))])

    register_console(app, api, samples)  # the web console and its sessions (/console/)
    api.register(app)

    async def prom(_: web.Request) -> web.Response:
        return web.Response(body=await exposition(),
                            headers={"Content-Type": metrics.content_type})

    app.router.add_get("/metrics", prom)
    return app


async def _peer_metrics(sock: Path, names: Sequence[str] = ()) -> bytes:
    """Another worker's /metrics text, only the samples `names` if given (empty if it does
    not answer: a scrape never fails)."""
    try:
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock)),
                                         timeout=aiohttp.ClientTimeout(total=5)) as s, \
                s.get("http://worker/metrics", params=[("name[]", n) for n in names]) as r:
            return await r.read() if r.status == 200 else b""
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        log.warning("gateway worker metrics at %s unavailable: %s", sock, exc)
        return b""


async def serve(cfg: Config, ready_line: bool = True, role: WorkerRole | None = None,
                children: Sequence[asyncio.subprocess.Process] = ()) -> None:
    """Run the gateway until SIGTERM/SIGINT; with `children` (worker 0 of several: the
    other workers, from `spawn_workers`), wait for them to be ready before saying so, and
    stop them on the way out."""
    role = role or WorkerRole()
    shared = role.count > 1 and role.rundir is not None
    if shared:
        assert role.rundir is not None
        CLIENTS.share(SharedActivity(role.rundir / "activity", role.index, role.count))
    health = SharedHealth(role.rundir / "health") if shared and role.rundir else None
    # the upload budget setting is the whole gateway's: each worker process holds its share
    cluster = await Cluster.open(cfg, shared_health=health, probe_loop=role.index == 0,
                                 workers=role.count)
    if shared and hasattr(cluster.meta, "share_commits"):  # etcd: one batcher (worker 0's)
        assert role.rundir is not None
        await cluster.meta.share_commits(role.rundir / SOCKET_NAME, owner=role.index == 0)
    metrics = Metrics()
    if shared and hasattr(cluster.meta, "share_commits"):
        metrics.watch_commit_sharing(cluster.meta.commit_sharing_state)
    metrics.watch_integrity(lambda: cluster.stripes.lies.found)
    metrics.watch_uploads(cluster.stripes.uploads)
    metrics.watch_writes(cluster.stripes.spares)
    if hasattr(cluster.meta, "auth_stamp_state"):  # etcd: the stamp follows a watch
        metrics.watch_auth_stamp(cluster.meta.auth_stamp_state)
    access_logs = AccessLogBuffer(cluster, cfg.access_log.max_buffered)
    server = S3Server(cluster, cfg.gateway, metrics, access_logs)
    runners = []
    workers = gauges = None
    stager = WorkerRunner()  # every gateway process stages its own access-log records
    try:
        stager.start(AccessLogStager(access_logs, cfg.access_log.stage_interval_s))
        sites: list[tuple[web.BaseRunner, str | Path]] = [(s3_runner(server),
                                                           cfg.gateway.listen)]
        if role.index == 0:
            peers = [role.socket(i) for i in range(1, role.count)] if shared else []
            sites.append((web.AppRunner(create_admin_app(cluster, metrics, peers),
                                        access_log=None, handle_signals=False),
                          cfg.gateway.admin_listen))
        elif shared:
            sites.append((web.AppRunner(_metrics_app(metrics), access_log=None,
                                        handle_signals=False), role.socket(role.index)))
        for i, (runner, addr) in enumerate(sites):
            refusal = s3_head_refusal if i == 0 else admin_head_refusal  # each its own kind
            malformed = s3_malformed if i == 0 else admin_malformed
            await runner.setup()
            if isinstance(addr, Path):
                await web.UnixSite(runner, str(addr)).start()
            elif i == 0 and role.listen_fds and shared:
                assert role.rundir is not None
                await BalancedTCPSite(runner, [socket.socket(fileno=fd)
                                               for fd in role.listen_fds],
                                      ConnSlots(role.rundir / "conns", role.index, role.count),
                                      header_timeout_s=cfg.gateway.header_timeout_s,
                                      max_header_bytes=cfg.gateway.max_header_bytes,
                                      refusal=refusal, malformed=malformed,
                                      grace_s=cfg.gateway.accept_grace_s
                                      ).start()
            else:
                host, port = split_hostport(addr)
                await GuardedTCPSite(runner, host, port,
                                     header_timeout_s=cfg.gateway.header_timeout_s,
                                     max_header_bytes=cfg.gateway.max_header_bytes,
                                     refusal=refusal, malformed=malformed).start()
            runners.append(runner)
        if role.index == 0:  # only once the S3 address is ours: a second gateway started
            # on a taken address fails above, before it takes over this one's leases
            from storage.workers.runner import gateway_holder, start_workers

            workers = start_workers(cluster, may_deliver=may_deliver)
            gauges = ClusterGauges(cluster, gateway_holder(cluster))
            metrics.watch_cluster(gauges)
            gauges.start()
        if children:
            await _wait_ready(children)
        stop = asyncio.Event()  # handled before "ready" is said: a stop right after it is clean
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if ready_line and role.index == 0:
            many = f", {role.count} workers" if role.count > 1 else ""
            print(f"gateway ready on http://{cfg.gateway.listen} "
                  f"(admin http://{cfg.gateway.admin_listen}{many})", flush=True)
        elif ready_line:
            print(f"gateway worker {role.index} ready", flush=True)
        await stop.wait()
        if gauges is not None:
            await gauges.stop()
        if workers is not None:
            await workers.stop()
    finally:
        await _stop(children)
        for r in runners:
            await r.cleanup()
        await stager.stop()
        try:  # a clean shutdown keeps every access-log record (see storage/accesslog.py)
            await access_logs.stage()
        finally:
            await cluster.close()


WORKER_START_S = 120.0


async def _wait_ready(children: Sequence[asyncio.subprocess.Process]) -> None:
    """Wait for every worker's ready line; RuntimeError if one exits or stays silent."""
    async def one(p: asyncio.subprocess.Process) -> None:
        assert p.stdout is not None
        async with asyncio.timeout(WORKER_START_S):
            while line := await p.stdout.readline():
                if b"ready" in line:
                    return
        raise RuntimeError(f"gateway worker (pid {p.pid}) exited with status "
                           f"{await p.wait()} before it was ready")

    await asyncio.gather(*(one(p) for p in children))


async def _stop(children: Sequence[asyncio.subprocess.Process]) -> None:
    for p in children:
        if p.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                p.terminate()
    for p in children:
        try:
            async with asyncio.timeout(15.0):
                await p.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            await p.wait()


def _metrics_app(metrics: Metrics) -> web.Application:
    """A worker's own /metrics, for worker 0 to sum (on a Unix socket only it can reach)."""
    app = web.Application()

    async def prom(request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(request.query.getall("name[]", ())),
                            headers={"Content-Type": metrics.content_type})

    app.router.add_get("/metrics", prom)
    return app
