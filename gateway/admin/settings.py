"""Admin routes for the settings a running cluster may change without a restart.

    GET    /admin/v1/config                 each runtime setting: value in force, configured
                                            value (tessera.toml), override (or null)
    PUT    /admin/v1/config/{name} {"value": N}   override it cluster-wide
    DELETE /admin/v1/config/{name}          drop the override (back to tessera.toml's value)

The runtime settings are `lifecycle.day_seconds` (storage/lifecycle_clock.py) and
`repair.busy_lag_ms`, `rebalance.busy_lag_ms` (storage/pacing_settings.py): each override lives
in the metadata store, so every gateway and its workers use it within seconds. Signed and audited like every admin route (`AdminApi._wrap`).
"""

from __future__ import annotations

import math
from typing import Any

from aiohttp import web

from gateway.admin.api import PREFIX, AdminApi, Call
from gateway.admin.auth import AdminError
from storage import pacing_settings
from storage.lifecycle_clock import DAY_SECONDS
from storage.lifecycle_clock import RUNTIME_SETTINGS as LIFECYCLE_SETTINGS
from storage.pacing_settings import PACING_SETTINGS

RUNTIME_SETTINGS = (*LIFECYCLE_SETTINGS, *PACING_SETTINGS)


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
        view = {DAY_SECONDS: {"value": self.clock.configured if override is None else override,
                              "configured": self.clock.configured, "override": override}}
        meta, cfg = self.api.cluster.meta, self.api.cluster.cfg
        for name in PACING_SETTINGS:
            o = await pacing_settings.override(meta, name)
            c = pacing_settings.configured(cfg, name)
            view[name] = {"value": c if o is None else o, "configured": c, "override": o}
        return view

    @staticmethod
    def _name(call: Call) -> str:
        name = call.param("name")
        if name not in RUNTIME_SETTINGS:
            raise AdminError(404, "NoSuchSetting", f"{name!r} cannot be changed at runtime; "
                             f"runtime settings: {', '.join(RUNTIME_SETTINGS)}")
        return name

    async def list(self, _: Call) -> tuple[int, Any]:
        return 200, {"settings": await self._view()}

    async def _apply(self, name: str, value: float | None) -> None:
        if name == DAY_SECONDS:
            await self.clock.set_day_seconds(value)
        else:
            await pacing_settings.set_override(self.api.cluster.meta, name, value)

    async def set(self, call: Call) -> tuple[int, Any]:
        name = self._name(call)
        value = call.body.get("value")
        if isinstance(value, bool) or not isinstance(value, int | float) or \
                not math.isfinite(value):
            raise AdminError(400, "InvalidArgument", "value must be a number")
        call.audit["value"] = value
        try:
            await self._apply(name, float(value))
        except ValueError as exc:
            raise AdminError(400, "InvalidArgument", str(exc)) from None
        return 200, {"settings": await self._view()}

    async def unset(self, call: Call) -> tuple[int, Any]:
        await self._apply(self._name(call), None)
        return 200, {"settings": await self._view()}


def register_settings(app: web.Application, api: AdminApi) -> None:
    """Add the runtime-settings routes (before the admin API's catch-all route)."""
    SettingsApi(api).register(app)
