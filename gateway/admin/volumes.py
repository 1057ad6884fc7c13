"""Admin routes for a tenant's block volumes: the same operations as `tessera volume`, over HTTP.

    GET    /admin/v1/tenants/{tenant}/volumes                              list
    POST   /admin/v1/tenants/{tenant}/volumes {"name","size"[,"extent_size","profile"]} create
    GET    /admin/v1/tenants/{tenant}/volumes/{volume}                     show (+ written bytes,
                                                                          live attach lease)
    DELETE /admin/v1/tenants/{tenant}/volumes/{volume}                     delete with snapshots
    POST   /admin/v1/tenants/{tenant}/volumes/{volume}/resize {"size"}     grow
    GET    /admin/v1/tenants/{tenant}/volumes/{volume}/snapshots           list snapshots
    POST   /admin/v1/tenants/{tenant}/volumes/{volume}/snapshots {"name"}  snapshot
    DELETE /admin/v1/tenants/{tenant}/volumes/{volume}/snapshots/{snapshot}
    POST   /admin/v1/tenants/{tenant}/volumes/{volume}/clone {"snapshot","name"}  new volume
    POST   /admin/v1/tenants/{tenant}/volumes/{volume}/flatten             copy shared extents

Sizes are byte counts or strings such as "10G" (`parse_size`). The routes call the same
`VolumeService` as the CLI (the model validates names and sizes and refuses conflicts); signed,
size-limited and audited like every admin route (`AdminApi._wrap`). Mount and unmount stay
local CLI operations: they need FUSE on the host that uses the volume.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import web

from gateway.admin.api import PREFIX, AdminApi, Call, _str_field
from gateway.admin.auth import AdminError
from gateway.block.mount import (
    grow_mounted,
    mounts_dict,
    old_daemon_warning,
)
from gateway.block.snaphere import NoAnswer, prepare_snapshot
from storage import errors as se
from storage.volumes import MiB, Volume, VolumeAttached, parse_size

log = logging.getLogger("tessera.admin")

VOLUMES = "/tenants/{tenant}/volumes"
VOLUME = VOLUMES + "/{volume}"


def volume_dict(v: Volume, stored: int | None = None, lease: dict | None = None) -> dict:
    """A volume as JSON: the shape of `tessera volume --json` and of the admin API."""
    d = {"name": v.name, "id": v.id, "tenant": v.tenant, "size": v.size,
         "extent_size": v.extent_size, "profile": v.profile, "generation": v.gen,
         "snapshots": [{"name": s["name"], "generation": g} for g, s in
                       sorted(v.snapshots.items())],
         "base": v.base, "clones": v.clones}
    if stored is not None:
        d["stored_bytes"] = stored
    if lease is not None:
        d["attached_by"] = {k: lease[k] for k in ("holder", "token", "expires", "unconfirmed")
                            if k in lease}
    return d


@contextmanager
def _refusals(code: str) -> Iterator[None]:
    """The model's refusals as 409 with its message: a live attach lease, else `code`."""
    try:
        yield
    except VolumeAttached as exc:
        raise AdminError(409, "VolumeAttached", str(exc)) from None
    except se.Conflict as exc:
        raise AdminError(409, code, str(exc)) from None


def _size(body: dict[str, Any], name: str, default: int | None = None) -> int:
    """A size field: a byte count or a string such as "10G"; 400 otherwise."""
    v = body.get(name, default)
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, str) and v:
        try:
            return parse_size(v)
        except se.InvalidInput as exc:
            raise AdminError(400, "InvalidArgument", f"{name}: {exc}") from None
    raise AdminError(400, "InvalidArgument", f"the body needs {name!r}: a number of bytes "
                     'or a string such as "10G"')


class VolumesApi:
    def __init__(self, api: AdminApi) -> None:
        self.api = api
        self.svc = api.volumes

    def register(self, app: web.Application) -> None:
        w = self.api._wrap
        for method, path, action, fn in (
            ("GET", VOLUMES, "volume.list", self.list),
            ("POST", VOLUMES, "volume.create", self.create),
            ("GET", VOLUME, "volume.show", self.show),
            ("DELETE", VOLUME, "volume.delete", self.delete),
            ("POST", VOLUME + "/resize", "volume.resize", self.resize),
            ("GET", VOLUME + "/snapshots", "volume.snapshot-list", self.snapshot_list),
            ("POST", VOLUME + "/snapshots", "volume.snapshot-create", self.snapshot_create),
            ("DELETE", VOLUME + "/snapshots/{snapshot}", "volume.snapshot-delete",
             self.snapshot_delete),
            ("POST", VOLUME + "/clone", "volume.clone", self.clone),
            ("POST", VOLUME + "/flatten", "volume.flatten", self.flatten),
        ):
            app.router.add_route(method, PREFIX + path, w(action, fn))

    async def _tenant(self, call: Call) -> str:
        return (await self.api._tenant(call, "tenant")).name

    async def _volume(self, call: Call) -> Volume:
        tenant = await self._tenant(call)
        name = call.param("volume")
        try:
            return await self.svc.get(tenant, name)
        except se.NotFound:
            raise AdminError(404, "NoSuchVolume", f"tenant {tenant!r} has no volume {name!r}; "
                             f"see GET {PREFIX}/tenants/{tenant}/volumes") from None

    def _snapshot(self, vol: Volume, snap: str) -> int:
        try:
            return vol.snapshot_gen(snap)
        except se.NotFound:
            raise AdminError(404, "NoSuchSnapshot", f"volume {vol.name!r} has no snapshot "
                             f"{snap!r}") from None

    # volumes -----------------------------------------------------------------------------

    async def list(self, call: Call) -> tuple[int, Any]:
        tenant = await self._tenant(call)
        return 200, {"volumes": [volume_dict(v) for v in await self.svc.list(tenant)]}

    async def create(self, call: Call) -> tuple[int, Any]:
        tenant = await self._tenant(call)
        name = _str_field(call.body, "name")
        call.audit["volume"] = name
        size = _size(call.body, "size")
        call.audit["size"] = size
        extent = _size(call.body, "extent_size", MiB)
        profile = call.body.get("profile")
        if profile is not None and (not isinstance(profile, str)
                                    or profile not in self.svc.cfg.profiles):
            raise AdminError(400, "InvalidArgument", f"unknown profile {profile!r}; this "
                             f"cluster has {', '.join(sorted(self.svc.cfg.profiles))}")
        with _refusals("VolumeAlreadyExists"):
            v = await self.svc.create(tenant, name, size, extent, profile)
        return 201, volume_dict(v)

    async def show(self, call: Call) -> tuple[int, Any]:
        v = await self._volume(call)
        stored = await self.svc.stored_bytes(v.tenant, v.name)
        lease = await self.svc.attached_at_a_glance(v.id)
        return 200, {"attached_by": None, **volume_dict(v, stored, lease)}

    async def delete(self, call: Call) -> tuple[int, Any]:
        v = await self._volume(call)
        with _refusals("VolumeInUse"):
            await self.svc.delete(v.tenant, v.name)
        return 200, {"tenant": v.tenant, "name": v.name, "deleted": True}

    async def resize(self, call: Call) -> tuple[int, Any]:
        v = await self._volume(call)
        size = _size(call.body, "size")
        call.audit["size"] = size
        grown = await self.svc.resize(v.tenant, v.name, size)
        # a mount on this host grows with it (the FUSE file, a loop device), as the CLI's
        mounts = await asyncio.to_thread(grow_mounted, self.svc.cfg.data_dir, v.tenant,
                                         v.name, grown.size)
        for st, why in mounts:
            if why:
                log.warning("volume %s: the mount at %s %s", v.name, st.target, why)
        return 200, {**volume_dict(grown), **mounts_dict(mounts)}

    # snapshots and clones ------------------------------------------------------------------

    async def snapshot_list(self, call: Call) -> tuple[int, Any]:
        v = await self._volume(call)
        return 200, {"snapshots": [{"name": s["name"], "generation": g, "created": s["created"]}
                                   for g, s in sorted(v.snapshots.items())]}

    async def snapshot_create(self, call: Call) -> tuple[int, Any]:
        v = await self._volume(call)
        snap = _str_field(call.body, "name")
        call.audit["snapshot"] = snap
        with _refusals("SnapshotAlreadyExists"):
            try:  # a mount on this host takes it (or flushes first), as the CLI does
                taken, flushed = await asyncio.to_thread(
                    prepare_snapshot, self.svc.cfg.data_dir, v.tenant, v.name, snap)
                if taken:
                    g = (await self.svc.get(v.tenant, v.name)).snapshot_gen(snap)
                else:
                    if flushed:
                        log.warning("%s", old_daemon_warning(v.name))
                    g = await self.svc.snapshot(v.tenant, v.name, snap, flushed=flushed)
            except NoAnswer as exc:
                raise AdminError(503, "MountNotAnswering", str(exc)) from None
            except OSError as exc:
                raise AdminError(409, "QuiesceFailed", f"cannot flush the mount of volume "
                                 f"{v.name!r} on this host ({exc}); unmount it or "
                                 "retry") from None
        created = (await self.svc.get(v.tenant, v.name)).snapshots.get(g, {}).get("created")
        return 201, {"volume": v.name, "name": snap, "generation": g, "created": created}

    async def snapshot_delete(self, call: Call) -> tuple[int, Any]:
        v = await self._volume(call)
        snap = call.param("snapshot")
        self._snapshot(v, snap)
        with _refusals("SnapshotHasClones"):
            await self.svc.delete_snapshot(v.tenant, v.name, snap)
        return 200, {"volume": v.name, "name": snap, "deleted": True}

    async def clone(self, call: Call) -> tuple[int, Any]:
        v = await self._volume(call)
        snap = _str_field(call.body, "snapshot")
        new = _str_field(call.body, "name")
        call.audit.update({"snapshot": snap, "clone": new})
        self._snapshot(v, snap)
        with _refusals("VolumeAlreadyExists"):
            c = await self.svc.clone(v.tenant, v.name, snap, new)
        return 201, volume_dict(c)

    async def flatten(self, call: Call) -> tuple[int, Any]:
        v = await self._volume(call)
        with _refusals("VolumeInUse"):
            flat = await self.svc.flatten(v.tenant, v.name)
        return 200, volume_dict(flat)


def register_volumes(app: web.Application, api: AdminApi) -> None:
    """Add the volume routes (before the admin API's catch-all route)."""
    VolumesApi(api).register(app)
