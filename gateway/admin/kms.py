"""Admin routes for a tenant's named KMS keys (SSE-KMS), used by `tessera kms`.

    GET  /admin/v1/tenants/{tenant}/kms-keys                                         list
    POST /admin/v1/tenants/{tenant}/kms-keys {"aliases": [...], "key_id", "description"}
                                                                                     create

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
from storage.kms import KmsKey, KmsService

KEYS = "/tenants/{tenant}/kms-keys"


def key_view(svc: KmsService, k: KmsKey) -> dict[str, Any]:
    return {"key_id": k.key_id, "arn": svc.arn(k), "tenant": k.tenant,
            "aliases": [f"alias/{a}" for a in k.aliases], "description": k.description,
            "state": k.state, "created": k.created, "managed": k.managed}


class KmsApi:
    def __init__(self, api: AdminApi) -> None:
        self.api = api
        self.svc = api.cluster.objects.kms

    def register(self, app: web.Application) -> None:
        w = self.api._wrap
        app.router.add_route("GET", PREFIX + KEYS, w("kms.list", self.list))
        app.router.add_route("POST", PREFIX + KEYS, w("kms.create", self.create))

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
        except se.KeyUnavailable as exc:
            raise AdminError(409, "TenantShredded", str(exc)) from None
        call.audit["key_id"] = k.key_id
        return 201, key_view(self.svc, k)


def register_kms(app: web.Application, api: AdminApi) -> None:
    KmsApi(api).register(app)
