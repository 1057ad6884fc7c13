"""The admin API (JSON over HTTP on the admin listener): tenants, their keys and access keys.

Every route except /health needs a SigV4 signature by an admin-role key (see `auth`); every
authenticated action is written to the audit log (who, what, when, result; refused requests to
its own capped file, `audit.AuditTrail`).

    GET    /health
    GET    /admin/v1/tenants                       list
    POST   /admin/v1/tenants            {"name"}   create
    GET    /admin/v1/tenants/{name}                show
    DELETE /admin/v1/tenants/{name}[?kms_keys=ID,..]  delete (only a tenant without buckets; a
                                                   shredded one once reclaimed)
    PATCH  /admin/v1/tenants/{name} {"canonical_id", "display_name", "email",
                                     "public_access_block": {flag: bool}}  S3 identity
    POST   /admin/v1/tenants/{name}/rotate-key     new KEK version, rewrap in background
    POST   /admin/v1/tenants/{name}/shred {"confirm": name, "wait_s": N}
    DELETE /admin/v1/tenants/{name}/shred          cancel a scheduled shred
    GET    /admin/v1/keys[?tenant=T]               list access keys (never secrets)
    POST   /admin/v1/keys               {"tenant"} create; the only answer holding a secret
    DELETE /admin/v1/keys/{access_key}             revoke

Block volumes of a tenant live under /admin/v1/tenants/{tenant}/volumes (`volumes`), its KMS
keys under /admin/v1/tenants/{tenant}/kms-keys (`kms`); cluster membership under
/admin/v1/nodes (`nodes`); bucket, queue and audit listings in `inventory`. The web console
(`gateway.console`) calls these same routes with a session instead of a signature (`auth`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gateway.admin import once
from gateway.admin.audit import AuditTrail, refused_who
from gateway.admin.auth import AdminError, authenticate_admin, claimed_key
from storage import errors as se
from storage import jsondoc
from storage import keys_rotation as kr
from storage.cluster import Cluster
from storage.records import Tenant, same_incarnation
from storage.workers import reclaim

log = logging.getLogger("tessera.admin")
PREFIX = "/admin/v1"
Route = Callable[["Call"], Awaitable[tuple[int, Any]]]


class Call:
    """One authenticated admin request: who, the parsed JSON body, the route's params."""

    def __init__(self, request: web.Request, who: str, body: dict[str, Any]) -> None:
        self.request = request
        self.who = who
        self.body = body
        self.audit: dict[str, Any] = {}

    def param(self, name: str) -> str:
        return self.request.match_info[name]


class AdminApi:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        a = cluster.cfg.audit
        self.audit = AuditTrail(cluster.cfg.data_dir / "audit", a.max_bytes, a.backups,
                                a.refused_max_bytes, a.refused_backups)
        self.volumes = cluster.volumes

    def register(self, app: web.Application) -> None:
        app.router.add_get("/health", self.health)
        routes: list[tuple[str, str, str, Route]] = [
            ("GET", "/tenants", "tenant.list", self.tenant_list),
            ("POST", "/tenants", "tenant.create", self.tenant_create),
            ("GET", "/tenants/{name}", "tenant.show", self.tenant_show),
            ("DELETE", "/tenants/{name}", "tenant.delete", self.tenant_delete),
            ("PATCH", "/tenants/{name}", "tenant.update", self.tenant_update),
            ("POST", "/tenants/{name}/rotate-key", "tenant.rotate-key", self.tenant_rotate),
            ("POST", "/tenants/{name}/shred", "tenant.shred", self.tenant_shred),
            ("DELETE", "/tenants/{name}/shred", "tenant.shred-cancel", self.shred_cancel),
            ("GET", "/keys", "key.list", self.key_list),
            ("POST", "/keys", "key.create", self.key_create),
            ("DELETE", "/keys/{access_key}", "key.revoke", self.key_revoke),
        ]
        for method, path, action, fn in routes:
            app.router.add_route(method, PREFIX + path, self._wrap(action, fn))
        app.router.add_route("*", PREFIX + "/{tail:.*}", self._not_found)

    async def health(self, _: web.Request) -> web.Response:
        states = {nid: s.state for nid, s in self.cluster.health.states.items()}
        return web.json_response({"status": "ok", "nodes": states})

    async def _not_found(self, request: web.Request) -> web.Response:
        try:
            await authenticate_admin(request, self.cluster)
        except AdminError as exc:
            return _error(exc.status, exc.code, exc.message)
        return _error(404, "NoSuchRoute", f"no admin route {request.method} {request.path}")

    def _wrap(self, action: str, fn: Route) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            remote = request.remote
            try:
                cred, raw = await authenticate_admin(request, self.cluster)
            except AdminError as exc:
                who = await refused_who(self.cluster.tenants, claimed_key(request))
                await self.audit.record(who, action, f"denied:{exc.code}",
                                        {**request.match_info, **_via(request)}, remote)
                return _error(exc.status, exc.code, exc.message)
            body = _json_object(raw)
            if isinstance(body, AdminError):  # refused, and audited like every outcome
                await self.audit.record(cred.access_key, action, f"error:{body.code}",
                                        {**request.match_info, **_via(request)}, remote)
                return _error(body.status, body.code, body.message)
            call = Call(request, cred.access_key, body)
            call.audit.update(request.match_info)
            call.audit.update(_via(request))
            try:
                status, payload = await fn(call)
            except AdminError as exc:
                status, payload = exc.status, _error_body(exc.code, exc.message)
            except se.StorageError as exc:
                status, payload = _map_storage_error(exc)
            except Exception:  # noqa: BLE001 - the audit log records every outcome
                log.exception("admin action %s failed", action)
                status, payload = 500, _error_body("InternalError", "internal error; see the "
                                                   "gateway log")
            if status >= 500 and once.CLAIMED in request:  # failed here: may be sent again
                await once.release(self.cluster.meta, request[once.CLAIMED])
            result = "ok" if status < 400 else f"error:{payload['error']['code']}"
            await self.audit.record(cred.access_key, action, result, call.audit, remote)
            return web.json_response(payload, status=status)

        return handle

    # tenants ---------------------------------------------------------------------------------

    async def _tenant_view(self, t: Tenant) -> dict[str, Any]:
        meta = self.cluster.meta
        if t.state == "active":
            n_buckets = len(await self.cluster.buckets.list(t.name))
        else:  # a shredded tenant's buckets go as the reclaim worker reclaims them
            n_buckets = (await reclaim.remaining(meta, t.name))["buckets"]
        rewrapping = t.name in await kr.pending_rewraps(meta)
        return {"name": t.name, "state": t.state, "created": t.created,
                "kek_version": t.current_kek if t.keks else None,
                "kek_versions": sorted(t.keks),
                "canonical_id": t.canonical_id or t.name,
                "display_name": t.display_name or t.name, "email": t.email,
                "public_access_block": t.public_access_block,
                "buckets": n_buckets, "rewrap_pending": rewrapping,
                "shred_due": await kr.pending_shred(meta, t.name),
                "reclaimed": t.reclaimed or None}

    async def tenant_list(self, _: Call) -> tuple[int, Any]:
        ts = [t for t in await self.cluster.tenants.list() if not t.name.startswith("_")]
        return 200, {"tenants": [await self._tenant_view(t) for t in ts]}

    async def tenant_create(self, call: Call) -> tuple[int, Any]:
        name = _str_field(call.body, "name")
        call.audit["tenant"] = name
        if name.startswith("_"):
            raise AdminError(400, "InvalidName", "tenant names may not start with '_'")
        reuse = call.body.get("reuse_name", False)
        if not isinstance(reuse, bool):
            raise AdminError(400, "InvalidRequest", "reuse_name must be true or false")
        t = await self.cluster.tenants.create(name, reuse=reuse)
        return 201, await self._tenant_view(t)

    async def tenant_show(self, call: Call) -> tuple[int, Any]:
        return 200, await self._tenant_view(await self._tenant(call))

    async def tenant_update(self, call: Call) -> tuple[int, Any]:
        """Set the tenant's S3 identity: canonical_id, display_name, email (all optional)."""
        t = await self._tenant(call)
        fields = {}
        for name in ("canonical_id", "display_name", "email"):
            if name in call.body:
                fields[name] = _str_field(call.body, name) if name == "canonical_id" \
                    else str(call.body[name])
        call.audit.update(fields)
        if "public_access_block" in call.body:
            flags = call.body["public_access_block"] or {}
            names = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy",
                     "RestrictPublicBuckets")
            if not isinstance(flags, dict) or not set(flags) <= set(names) or not all(
                    isinstance(v, bool) for v in flags.values()):
                raise AdminError(400, "InvalidArgument", "public_access_block maps "
                                 f"{', '.join(names)} to true or false")
            call.audit["public_access_block"] = flags
            t = await self.cluster.tenants.set_public_access_block(t.name, flags)
        if fields:
            t = await self.cluster.tenants.set_identity(t.name, **fields)
        return 200, await self._tenant_view(t)

    async def tenant_delete(self, call: Call) -> tuple[int, Any]:
        t = await self._tenant(call)
        if t.state == "shredded" and not t.reclaimed:
            left = await reclaim.remaining(self.cluster.meta, t.name)
            raise AdminError(409, "TenantNotEmpty", f"tenant {t.name!r} is shredded and its "
                             f"records and shards are still being reclaimed ({left['buckets']} "
                             f"buckets, {left['volumes']} volumes left); retry once `tessera "
                             "tenant show` gives a reclaimed time")
        if await self.cluster.buckets.list(t.name):
            raise AdminError(409, "TenantNotEmpty", f"tenant {t.name!r} still owns buckets; "
                             "delete them first (or shred the tenant)")
        if await self.volumes.list(t.name):
            raise AdminError(409, "TenantNotEmpty", f"tenant {t.name!r} still owns volumes; "
                             "delete them first (or shred the tenant)")
        confirmed = call.request.query.get("kms_keys")  # the ids the operator confirmed
        expect = None if confirmed is None else {k for k in confirmed.split(",") if k}

        async def revoke() -> None:  # before the record goes: no live key of a gone tenant
            for k in await self.cluster.tenants.list_keys(t.name):
                if k.state == "active":
                    await self.cluster.tenants.revoke_key(k.access_key)
        # marked "deleting" (no KMS key made from then on), the confirmed keys checked (a
        # mismatch changes nothing), the access keys revoked, then keys, aliases, record
        await self.cluster.objects.kms.delete_tenant(t.name, expect, revoke,
                                                     self.cluster.objects.lock_clock.now)
        return 200, {"name": t.name, "deleted": True}

    async def tenant_rotate(self, call: Call) -> tuple[int, Any]:
        t = await self._tenant(call)
        v = await kr.rotate(self.cluster.meta, self.cluster.tenants, t.name)
        call.audit["version"] = v
        return 200, {"name": t.name, "kek_version": v, "rewrap_pending": True}

    async def tenant_shred(self, call: Call) -> tuple[int, Any]:
        t = await self._tenant(call)
        if call.body.get("confirm") != t.name:
            raise AdminError(400, "ConfirmationRequired", "shredding destroys every object of "
                             f"the tenant forever; repeat with confirm = {t.name!r}")
        wait = call.body.get("wait_s", self.cluster.cfg.gateway.shred_wait_s)
        if not isinstance(wait, int | float) or isinstance(wait, bool) or wait < 0:
            raise AdminError(400, "InvalidArgument", "wait_s must be a number of seconds >= 0")
        call.audit["wait_s"] = wait
        bypass = call.body.get("bypass_governance_retention", False)
        if not isinstance(bypass, bool):
            raise AdminError(400, "InvalidArgument", "bypass_governance_retention must be "
                             "true or false")
        call.audit["bypass_governance_retention"] = bypass
        due = await kr.schedule_shred(self.cluster.meta, self.cluster.tenants, t.name,
                                      float(wait), call.who,
                                      self.cluster.objects.lock_clock.now, bypass)
        state = "shredded" if wait == 0 else "scheduled"
        return 200, {"name": t.name, "state": state, "due": due}

    async def shred_cancel(self, call: Call) -> tuple[int, Any]:
        t = await self._tenant(call)
        await kr.cancel_shred(self.cluster.meta, self.cluster.tenants, t.name)
        t = await self._tenant(call)  # "active" again if it was fenced
        return 200, {"name": t.name, "state": t.state, "shred_due": None}

    async def _tenant(self, call: Call, param: str = "name") -> Tenant:
        """The tenant named by the route parameter `param`, or 404 NoSuchTenant."""
        name = call.param(param)
        call.audit["tenant"] = name
        if name.startswith("_"):
            raise AdminError(404, "NoSuchTenant", f"tenant {name!r} does not exist")
        try:
            return await self.cluster.tenants.get(name)
        except se.NotFound:
            raise AdminError(404, "NoSuchTenant", f"tenant {name!r} does not exist; "
                             "see `tessera tenant list`") from None

    # access keys -----------------------------------------------------------------------------

    async def key_list(self, call: Call) -> tuple[int, Any]:
        tenant = call.request.query.get("tenant")
        if tenant is not None:
            # A misspelt tenant is an error, not an empty list that reads as "no keys".
            call.audit["tenant"] = tenant
            try:
                if tenant.startswith("_"):
                    raise se.NotFound(tenant)
                await self.cluster.tenants.get(tenant)
            except se.NotFound:
                if await self.cluster.tenants.was_deleted(tenant):  # its keys are listed
                    raise AdminError(404, "NoSuchTenant", f"tenant {tenant!r} was deleted; "
                                     "its keys (revoked) are in `tessera key list`, marked "
                                     "(deleted)") from None
                raise AdminError(404, "NoSuchTenant", f"tenant {tenant!r} does not exist; "
                                 "see `tessera tenant list`") from None
        recs = await self.cluster.tenants.list_keys(tenant)
        # a key made for a deleted tenant is its, not a later namesake's (`--reuse-name`)
        live = {t.name: t for t in await self.cluster.tenants.list()}
        return 200, {"keys": [{"access_key_id": r.access_key, "tenant": r.tenant,
                               "state": r.state, "created": r.created,
                               "tenant_deleted": r.tenant not in live
                               or not same_incarnation(r, live[r.tenant])}
                              for r in recs if r.role == "tenant"]}

    async def key_create(self, call: Call) -> tuple[int, Any]:
        tenant = _str_field(call.body, "tenant")
        call.audit["tenant"] = tenant
        if tenant.startswith("_"):
            raise AdminError(404, "NoSuchTenant", f"tenant {tenant!r} does not exist")
        try:
            cred = await self.cluster.tenants.create_key(tenant)
        except se.NotFound:
            raise AdminError(404, "NoSuchTenant", f"tenant {tenant!r} does not exist; create "
                             "it with `tessera tenant create`") from None
        call.audit["access_key"] = cred.access_key
        return 201, {"access_key_id": cred.access_key, "secret_access_key": cred.secret_key,
                     "tenant": cred.tenant, "created": time.time()}

    async def key_revoke(self, call: Call) -> tuple[int, Any]:
        ak = call.param("access_key")
        call.audit["access_key"] = ak
        recs = {r.access_key: r for r in await self.cluster.tenants.list_keys()}
        rec = recs.get(ak)
        if rec is None or rec.role != "tenant":
            raise AdminError(404, "NoSuchAccessKey", f"access key {ak} does not exist; see "
                             "`tessera key list`")
        await self.cluster.tenants.revoke_key(ak)
        return 200, {"access_key_id": ak, "tenant": rec.tenant, "state": "revoked"}


def _str_field(body: dict[str, Any], name: str) -> str:
    v = body.get(name)
    if not isinstance(v, str) or not v:
        raise AdminError(400, "InvalidArgument", f"the body needs a non-empty string field {name!r}")
    return v


def _via(request: web.Request) -> dict[str, str]:
    """{"via": "console"} for a request made through a console session (cookie, no signature)."""
    from gateway.console.sessions import COOKIE

    if COOKIE in request.cookies and "Authorization" not in request.headers:
        return {"via": "console"}
    return {}


def utf8_clean(doc: Any) -> bool:
    """False if a parsed JSON document holds an unpaired surrogate (`"\\ud800"` parses, but
    no UTF-8 can encode it: it would fail deep in a key or a comparison, as a 500)."""
    try:
        json.dumps(doc, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_object(raw: bytes) -> dict[str, Any] | AdminError:
    """The request body as a JSON object (empty: {}), or the 400 that refuses it."""
    if not raw:
        return {}
    try:
        body = jsondoc.loads(raw)
    except ValueError:
        return AdminError(400, "MalformedJSON", "the body is not valid JSON")
    if not utf8_clean(body):
        return AdminError(400, "MalformedJSON", "the body holds an unpaired \\u surrogate "
                          "(not a Unicode character)")
    if not isinstance(body, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", int: "a number",
                float: "a number"}.get(type(body), "null")
        return AdminError(400, "MalformedJSON", f"the body must be a JSON object, not {kind}")
    return body


def _error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response(_error_body(code, message), status=status)


def _map_storage_error(exc: se.StorageError) -> tuple[int, Any]:
    if isinstance(exc, se.NotFound):
        return 404, _error_body("NotFound", str(exc))
    if isinstance(exc, se.TenantNotEmpty):
        return 409, _error_body("TenantNotEmpty", str(exc))
    if isinstance(exc, se.Conflict):
        return 409, _error_body("Conflict", str(exc))
    if isinstance(exc, se.InvalidInput):
        return 400, _error_body("InvalidArgument", str(exc))
    if isinstance(exc, se.TenantDeleting):
        return 409, _error_body("TenantDeleting", str(exc))
    if isinstance(exc, se.KeyUnavailable):
        return 409, _error_body("TenantShredded", str(exc))
    if isinstance(exc, se.TenantShredding):  # rotation or a new key while fenced
        return 409, _error_body("TenantShredding", str(exc))
    return 503, _error_body("Unavailable", str(exc))
