"""The console's routes on the admin listener: its static files, login, session, logout, the
throughput/latency series, and the security headers of every admin answer.

    GET  /console/                      the page (HTML/CSS/JS shipped in gateway/console/static)
    POST /console/api/login             {"access_key", "secret_key"} of an admin key -> cookie
    GET  /console/api/session           who is logged in, the CSRF token, when the session ends
    POST /console/api/logout            (X-CSRF-Token) ends the session
    GET  /admin/v1/metrics/series       the last hour of throughput and latency (`samples`)

Everything else the console shows or changes goes through the ordinary admin API routes.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import web

from gateway.admin.api import PREFIX, AdminApi, utf8_clean
from gateway.admin.audit import refused_who
from gateway.admin.auth import AdminError, _read_body, authenticate_admin
from gateway.console.samples import Sampler
from gateway.console.sessions import (
    COOKIE,
    CSRF_HEADER,
    SESSIONS,
    SessionStore,
    came_over_tls,
    csrf_ok,
    from_another_origin,
)
from storage import jsondoc
from storage.workers.runner import WorkerRunner

STATIC = {"index.html": "text/html", "console.js": "text/javascript", "console.css": "text/css"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
API_CSP = "default-src 'none'; frame-ancestors 'none'"
DUMMY_SECRET = "x" * 40  # compared against when the key is unknown, so both paths take as long


def _files() -> dict[str, bytes]:
    root = resources.files("gateway.console") / "static"
    return {name: (root / name).read_bytes() for name in STATIC}


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


class ConsoleRoutes:
    def __init__(self, api: AdminApi, exposition: Callable[[], Awaitable[bytes]]) -> None:
        self.api = api
        self.cluster = api.cluster
        g = api.cluster.cfg.gateway
        self.sessions = SessionStore(g.console_session_idle_s, g.console_session_max_s)
        self.sampler = Sampler(exposition)
        self.files = _files()

    def register(self, app: web.Application) -> None:
        app[SESSIONS] = self.sessions
        app.router.add_get("/console", self.redirect)
        app.router.add_get("/console/", self.static)
        app.router.add_get("/console/{name}", self.static)
        app.router.add_post("/console/api/login", self.login)
        app.router.add_get("/console/api/session", self.session)
        app.router.add_post("/console/api/logout", self.logout)
        app.router.add_get(PREFIX + "/metrics/series", self.series)
        app.on_response_prepare.append(_security_headers)

        runner = WorkerRunner()  # unleased: every gateway keeps its own samples

        async def start(_: web.Application) -> None:
            runner.start(self.sampler)

        async def stop(_: web.Application) -> None:
            await runner.stop()

        app.on_startup.append(start)
        app.on_cleanup.append(stop)

    async def redirect(self, _: web.Request) -> web.Response:
        raise web.HTTPPermanentRedirect("/console/")

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info.get("name") or "index.html"
        if name not in STATIC:
            return web.Response(status=404, text="not found")
        return web.Response(body=self.files[name], content_type=STATIC[name], charset="utf-8")

    def _cookie_args(self, request: web.Request) -> dict[str, Any]:
        return {"path": "/", "httponly": True, "samesite": "Strict",
                "secure": came_over_tls(request)}

    async def login(self, request: web.Request) -> web.Response:
        remote = request.remote or "-"
        if not self.sessions.login_begin(remote):
            wait_s = self.sessions.login_retry_s(remote)
            resp = _error(429, "TooManyFailedLogins", "too many failed logins from this "
                          f"address; try again in {wait_s} s")
            resp.headers["Retry-After"] = str(wait_s)
            return resp
        try:
            return await self._login(request, remote)
        finally:
            self.sessions.login_end(remote)

    async def _login(self, request: web.Request, remote: str) -> web.Response:
        if request.content_type != "application/json":
            return _error(415, "UnsupportedMediaType", "log in with a JSON body")
        try:
            body = jsondoc.loads(await _read_body(
                request, self.cluster.cfg.gateway.header_timeout_s))
        except AdminError as exc:
            return _error(exc.status, exc.code, exc.message)
        except ValueError:
            return _error(400, "MalformedJSON", "the body is not valid JSON")
        if not utf8_clean(body):
            return _error(400, "MalformedJSON", "the body holds an unpaired \\u surrogate")
        ak = body.get("access_key") if isinstance(body, dict) else None
        sk = body.get("secret_key") if isinstance(body, dict) else None
        if not isinstance(ak, str) or not isinstance(sk, str) or not ak or not sk:
            return _error(400, "InvalidArgument", "give access_key and secret_key")
        cred = await self.cluster.tenants.credential(ak) if len(ak) <= 128 else None
        good = cred.secret_key if cred is not None else DUMMY_SECRET
        same = hmac.compare_digest(good.encode(), sk.encode("utf-8", "surrogateescape"))
        if not same or cred is None or cred.role != "admin":
            self.sessions.login_failed(remote)
            who = await refused_who(self.cluster.tenants, ak)
            await self.api.audit.record(who, "console.login", "denied:InvalidCredentials",
                                        {"via": "console"}, request.remote)
            return _error(403, "InvalidCredentials", "wrong access key or secret key, or not "
                          "an admin key")
        token, s = self.sessions.open(cred.access_key)
        await self.api.audit.record(cred.access_key, "console.login", "ok", {"via": "console"},
                                    request.remote)
        resp = web.json_response(self._session_doc(s))
        resp.set_cookie(COOKIE, token, **self._cookie_args(request))
        return resp

    def _session_doc(self, s: Any) -> dict[str, Any]:
        return {"who": s.who, "csrf": s.csrf, "csrf_header": CSRF_HEADER,
                "expires": s.expires(self.sessions.idle_s, self.sessions.max_s),
                "idle_s": self.sessions.idle_s}

    async def session(self, request: web.Request) -> web.Response:
        if from_another_origin(request):
            return _error(403, "CrossOrigin", "the request comes from another site")
        s = self.sessions.find(request.cookies.get(COOKIE))
        if s is None:
            return _error(403, "InvalidSession", "not logged in")
        return web.json_response(self._session_doc(s))

    async def logout(self, request: web.Request) -> web.Response:
        token = request.cookies.get(COOKIE)
        s = self.sessions.find(token, touch=False)
        if s is None:
            return _error(403, "InvalidSession", "not logged in")
        if not csrf_ok(s, request.headers.get(CSRF_HEADER)):
            await self.api.audit.record(s.who, "console.logout", "denied:InvalidCSRFToken",
                                        {"via": "console"}, request.remote)
            return _error(403, "InvalidCSRFToken", f"logout needs the {CSRF_HEADER} header")
        self.sessions.close(token)
        await self.api.audit.record(s.who, "console.logout", "ok", {"via": "console"},
                                    request.remote)
        resp = web.json_response({"logged_out": True})
        resp.del_cookie(COOKIE, path="/")
        return resp

    async def series(self, request: web.Request) -> web.Response:
        try:
            await authenticate_admin(request, self.cluster)
        except AdminError as exc:
            return _error(exc.status, exc.code, exc.message)
        return web.json_response(await self.sampler.series())


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """No framing, no MIME sniffing, no referrer to other origins, no caching of admin
    answers; the console's pages load only this listener's own scripts and styles (no inline
    code, no CDN). Referrer-Policy is same-origin, not no-referrer: under no-referrer, Fetch
    sends `Origin: null` on a same-origin POST/PUT/DELETE (Firefox's fetch, Chrome's form
    posts), and the Origin check refused every console change from those browsers."""
    h = response.headers
    h.setdefault("X-Frame-Options", "DENY")
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("Referrer-Policy", "same-origin")
    h.setdefault("Cache-Control", "no-store")
    h.setdefault("Content-Security-Policy",
                 CSP if request.path.startswith("/console") else API_CSP)


def register_console(app: web.Application, api: AdminApi,
                     exposition: Callable[[], Awaitable[bytes]]) -> None:
    """Add the console (before the admin API's catch-all route); `exposition` gives the
    gateway's metrics text the traffic charts sample (`samples.SAMPLE_NAMES`, each worker's:
    `samples.read_totals` adds them up)."""
    ConsoleRoutes(api, exposition).register(app)
