"""Admin routes for the settings a running cluster may change without a restart.

    GET    /admin/v1/config                 each runtime setting: value in force, configured
                                            value (tessera.toml), override (or null)
    PUT    /admin/v1/config/{name} {"value": N}   override it cluster-wide
    DELETE /admin/v1/config/{name}          drop the override (back to tessera.toml's value)

Today the one runtime setting is `lifecycle.day_seconds` (storage/lifecycle_clock.py): the
override lives in the metadata store, so every gateway and its lifecycle worker use it within
a second. Signed and audited like every admin route (`AdminApi._wrap`).
"""

from __future__ import annotations

import math
from typing import Any

from aiohttp import web

from gateway.admin.api import PREFIX, AdminApi, Call
from gateway.admin.auth import AdminError
from storage.lifecycle_clock import DAY_SECONDS, RUNTIME_SETTINGS


class SettingsApi:
    def __init__(self, api: AdminApi) -> None:
        self.api = api
        self.clock = api.cluster.lifecycle.clock

    def register(self, app: web.Application) -> None:
        w = self.api._wrap
        app.router.add_route("GET", PREFIX + "/config", w("config.list", self.list))
        app.router.add_route("PUT", PREFIX + "/config/{name}", w("config.set", self.set))
        app.router.add_route("DELETE", PREFIX + "/config/{name}", w("config.unset", self.unset))

    async def _view(self) -> dict[str, Any]:
        override = await self.clock.override()
        return {DAY_SECONDS: {"value": self.clock.configured if override is None else override,
                              "configured": self.clock.configured, "override": override}}

    @staticmethod
    def _name(call: Call) -> str:
        name = call.param("name")
        if name not in RUNTIME_SETTINGS:
            raise AdminError(404, "NoSuchSetting", f"{name!r} cannot be changed at runtime; "
                             f"runtime settings: {', '.join(RUNTIME_SETTINGS)}")
        return name

    async def list(self, _: Call) -> tuple[int, Any]:
        return 200, {"settings": await self._view()}

    async def set(self, call: Call) -> tuple[int, Any]:
        self._name(call)
        value = call.body.get("value")
        if isinstance(value, bool) or not isinstance(value, int | float) or \
                not math.isfinite(value):
            raise AdminError(400, "InvalidArgument", "value must be a number of seconds")
        call.audit["value"] = value
        try:
            await self.clock.set_day_seconds(float(value))
        except ValueError as exc:
            raise AdminError(400, "InvalidArgument", str(exc)) from None
        return 200, {"settings": await self._view()}

    async def unset(self, call: Call) -> tuple[int, Any]:
        self._name(call)
        await self.clock.set_day_seconds(None)
        return 200, {"settings": await self._view()}


def register_settings(app: web.Application, api: AdminApi) -> None:
    """Add the runtime-settings routes (before the admin API's catch-all route)."""
    SettingsApi(api).register(app)
