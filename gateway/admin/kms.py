"""Admin routes for a tenant's named KMS keys (SSE-KMS), used by `tessera kms`.

    GET  /admin/v1/tenants/{tenant}/kms-keys                                         list
    POST /admin/v1/tenants/{tenant}/kms-keys {"aliases": [...], "key_id", "description"}
                                                                                     create
    POST /admin/v1/tenants/{tenant}/kms-keys/disable {"key": NAME}                    DisableKey
    POST /admin/v1/tenants/{tenant}/kms-keys/enable {"key": NAME}                     EnableKey
    POST /admin/v1/tenants/{tenant}/kms-keys/schedule-deletion
         {"key": NAME, "pending_window_days": 7..30 (default 30), "wait_s": S}  ScheduleKeyDeletion
    POST /admin/v1/tenants/{tenant}/kms-keys/cancel-deletion {"key": NAME}     CancelKeyDeletion

NAME is any name S3 clients use (key id, ARN, `alias/x`, alias ARN) or a bare alias `x`.
`wait_s` (an operator's override of the waiting period, 0: delete now) replaces
`pending_window_days`. A state the key's state does not allow is 409 KMSInvalidStateException;
the tenant's default key (alias/aws/s3) is managed and refused (400).

A key is answered with its id, ARN, aliases (`alias/NAME`), description, state and creation
time, never its material. `key_id` (optional) must be a UUID; aliases are unique per tenant
and `alias/aws/...` is reserved for the tenant's default key (made on first SSE-KMS use).
Signed, size-limited and audited like every admin route (`AdminApi._wrap`).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.admin.api import PREFIX, AdminApi, Call
from gateway.admin.auth import AdminError
from storage import errors as se
from storage import kms
from storage.kms import KmsKey, KmsService

KEYS = "/tenants/{tenant}/kms-keys"


def key_view(svc: KmsService, k: KmsKey) -> dict[str, Any]:
    return {"key_id": k.key_id, "arn": svc.arn(k), "tenant": k.tenant,
            "aliases": [f"alias/{a}" for a in k.aliases], "description": k.description,
            "state": k.state, "created": k.created, "managed": k.managed,
            "deletion_date": k.deletion_date or None}


def _key_name(call: Call) -> str:
    """The key a lifecycle call names: any S3 form, or a bare alias as `kms create` takes."""
    name = call.body.get("key")
    if not isinstance(name, str) or not name:
        raise AdminError(400, "InvalidArgument", "key (a key id, ARN or alias) is required")
    try:
        kms.parse_key_ref(name)
        return name
    except kms.KmsNotFound:
        return f"alias/{name}"


class KmsApi:
    def __init__(self, api: AdminApi) -> None:
        self.api = api
        self.svc = api.cluster.objects.kms

    def register(self, app: web.Application) -> None:
        w = self.api._wrap
        app.router.add_route("GET", PREFIX + KEYS, w("kms.list", self.list))
        app.router.add_route("POST", PREFIX + KEYS, w("kms.create", self.create))
        for action in ("disable", "enable", "schedule-deletion", "cancel-deletion"):
            app.router.add_route("POST", f"{PREFIX}{KEYS}/{action}",
                                 w(f"kms.{action}", self.lifecycle(action)))

    def lifecycle(self, action: str) -> Any:
        async def route(call: Call) -> tuple[int, Any]:
            t = await self.api._tenant(call, "tenant")
            name = _key_name(call)
            call.audit["key"] = name
            try:
                if action in ("disable", "enable"):
                    k = await self.svc.set_enabled(t.name, name, action == "enable")
                elif action == "cancel-deletion":
                    k = await self.svc.cancel_deletion(t.name, name)
                else:
                    k = await self.svc.schedule_deletion(t.name, name, _wait_s(call))
            except kms.KmsNotFound as exc:
                raise AdminError(404, "NotFoundException", str(exc)) from None
            except kms.KmsInvalidState as exc:
                raise AdminError(409, "KMSInvalidStateException", str(exc)) from None
            call.audit.update({"key_id": k.key_id, "state": k.state})
            return 200, key_view(self.svc, k)
        return route

    async def list(self, call: Call) -> tuple[int, Any]:
        t = await self.api._tenant(call, "tenant")
        return 200, {"keys": [key_view(self.svc, k) for k in await self.svc.list(t.name)]}

    async def create(self, call: Call) -> tuple[int, Any]:
        t = await self.api._tenant(call, "tenant")
        aliases = call.body.get("aliases", [])
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            raise AdminError(400, "InvalidArgument", "aliases must be a list of strings")
        key_id = call.body.get("key_id")
        description = call.body.get("description", "")
        if (key_id is not None and not isinstance(key_id, str)) or not isinstance(description,
                                                                                   str):
            raise AdminError(400, "InvalidArgument", "key_id and description are strings")
        call.audit.update({"aliases": aliases, "key_id": key_id})
        try:
            k = await self.svc.create(t.name, aliases, key_id, description)
        except se.Conflict as exc:
            raise AdminError(409, "AlreadyExists", str(exc)) from None
        except se.TenantDeleting as exc:
            raise AdminError(409, "TenantDeleting", str(exc)) from None
        except se.KeyUnavailable as exc:
            raise AdminError(409, "TenantShredded", str(exc)) from None
        call.audit["key_id"] = k.key_id
        return 201, key_view(self.svc, k)


def _wait_s(call: Call) -> float:
    """The waiting period of a ScheduleKeyDeletion: `wait_s`, or `pending_window_days`
    (7 to 30, default 30, as AWS KMS) in real days."""
    wait = call.body.get("wait_s")
    if wait is not None:
        if isinstance(wait, bool) or not isinstance(wait, int | float) or wait < 0:
            raise AdminError(400, "InvalidArgument", "wait_s is a number of seconds >= 0")
        return float(wait)
    days = call.body.get("pending_window_days", kms.WINDOW_DAYS[1])
    lo, hi = kms.WINDOW_DAYS
    if isinstance(days, bool) or not isinstance(days, int) or not lo <= days <= hi:
        raise AdminError(400, "ValidationException", "pending_window_days must be an integer "
                         f"from {lo} to {hi}")
    return days * 86400.0


def register_kms(app: web.Application, api: AdminApi) -> None:
    KmsApi(api).register(app)
