"""`tessera up`: a whole cluster on this machine as child processes, data under one directory.

Nine storage nodes in three zones (az1 on 127.0.1.x, az2 on 127.0.2.x, az3 on 127.0.3.x),
six archive nodes (a1..a6 on 127.0.Z.11/12) and a gateway. The first start writes the cluster config, creates the default tenant with
an access key and the admin credential, and writes `tessera.env`; later starts reuse them.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from ops.envfile import env_path, read_env, write_env
from ops.etcdcluster import EtcdCluster, EtcdMember, default_members
from ops.localports import check_free, move_ports
from ops.nodeforks import ForkedProc, start_forker, until_ready
from storage.config import (
    DEFAULT_INLINE_MAX_BYTES,
    ENV_ADMIN_ACCESS_KEY,
    ENV_ADMIN_SECRET_KEY,
    ENV_ADMIN_URL,
    ENV_CONFIG,
    Config,
    load_config,
)
from storage.filemodes import secure_tree
from storage.metadata.etcd_tls import EtcdClientTLS
from storage.starterdeath import watch_starters

ZONES = ("az1", "az2", "az3")
NODES_PER_ZONE = 3
READY_TIMEOUT_S = 60.0
_DRAINS: set[asyncio.Task[None]] = set()  # the children's stdout drains, held until done


ARCHIVE_NODES_PER_ZONE = 2  # a1..a6 on 127.0.Z.11 and 127.0.Z.12, role "archive"


LOCAL_RESERVE_BYTES = 1024 * 1024  # [packs] reserve_bytes of a local cluster's nodes


def default_config(data_dir: Path, port: int, node_port: int, admin_port: int,
                   etcd_endpoints: tuple[str, ...] = (), day_seconds: float | None = None,
                   inline_max_bytes: int | None = None,
                   etcd_tls: EtcdClientTLS | None = None) -> str:
    lines = [
        f'data_dir = "{data_dir}"',
        "",
        "[cluster]",
        'default_profile = "standard"',
        "segment_size = 1048576",
        "write_quorum_extra = 1",
        f"inline_max_bytes = {DEFAULT_INLINE_MAX_BYTES if inline_max_bytes is None else inline_max_bytes}",
        "",
        "[gateway]",
        f'listen = "127.0.0.1:{port}"',
        f'admin_listen = "127.0.0.1:{admin_port}"',
        'region = "us-east-1"',
        "",
        *_metadata_section(etcd_endpoints, etcd_tls),
        "[profiles.standard]",
        "k = 4",
        "m = 2",
        'role = "standard"',
        "",
        *_archive_sections(day_seconds),
        # every node of a local cluster shares one file system, so a reserve per node
        # (`nodes.packreserve`, one pack each by default) costs disk and guards nothing
        "[packs]",
        f"reserve_bytes = {LOCAL_RESERVE_BYTES}",
        "",
    ]
    n = 0
    for z, zone in enumerate(ZONES, start=1):
        for i in range(1, NODES_PER_ZONE + 1):
            n += 1
            lines += ["[[nodes]]", f'id = "n{n}"', f'zone = "{zone}"',
                      f'address = "127.0.{z}.{i}:{node_port}"', ""]
    a = 0
    for z, zone in enumerate(ZONES, start=1):
        for i in range(11, 11 + ARCHIVE_NODES_PER_ZONE):
            a += 1
            lines += ["[[nodes]]", f'id = "a{a}"', f'zone = "{zone}"',
                      f'address = "127.0.{z}.{i}:{node_port}"', 'role = "archive"', ""]
    return "\n".join(lines)


def _archive_sections(day_seconds: float | None) -> list[str]:
    """Archive profile 3+3 on archive nodes (2 per zone: a zone loss leaves 4 >= k shards),
    compressed; GLACIER and DEEP_ARCHIVE map to it, the other classes to standard."""
    lines = ["[profiles.archive]", "k = 3", "m = 3", 'role = "archive"', "compress = true", "",
             "[storage_classes]"]
    lines += [f'{c} = "standard"' for c in ("STANDARD", "STANDARD_IA", "GLACIER_IR")]
    lines += [f'{c} = "archive"' for c in ("GLACIER", "DEEP_ARCHIVE")]
    lines.append("")
    if day_seconds is not None:
        lines += ["[archive]", f"day_seconds = {float(day_seconds)}",
                  f"lifecycle_interval_s = {max(0.5, min(3600.0, day_seconds / 10))}", ""]
    return lines


def _metadata_section(etcd_endpoints: tuple[str, ...],
                      tls: EtcdClientTLS | None = None) -> list[str]:
    if not etcd_endpoints:
        return ["[metadata]", 'backend = "sqlite"', 'path = "meta/tessera.db"', ""]
    eps = ", ".join(f'"{e}"' for e in etcd_endpoints)
    files = [] if tls is None else [f'etcd_ca_file = "{tls.ca_file}"',
                                    f'etcd_cert_file = "{tls.cert_file}"',
                                    f'etcd_key_file = "{tls.key_file}"']
    return ["[metadata]", 'backend = "etcd"', f"etcd_endpoints = [{eps}]", *files, ""]


# a data directory whose etcd members were made before mutual TLS: refused, not upgraded
PRE_TLS = ("this data directory's etcd members were made before etcd mutual TLS and accept "
           "any client; copy your data out with the previous Tessera, then start a fresh "
           "data directory (`tessera up --metadata etcd` makes its certificates)")


def _local_etcd(data_dir: Path, metadata: str, etcd_port: int,
                etcd_peer_port: int) -> EtcdCluster | None:
    """The local etcd members of this data directory (chosen at its first start), if any."""
    members_file = data_dir / "etcd" / "members.json"
    if members_file.exists():
        members = [EtcdMember(**m) for m in json.loads(members_file.read_text())]
        if not all(m.tls for m in members):
            raise RuntimeError(PRE_TLS)
    elif metadata == "etcd":
        if (data_dir / "tessera.toml").exists():
            raise RuntimeError(f"{data_dir} was created without --metadata etcd; the metadata "
                               "backend is chosen at first start")
        members = default_members(etcd_port, etcd_peer_port)
        members_file.parent.mkdir(parents=True, exist_ok=True)
        members_file.write_text(json.dumps([asdict(m) for m in members]))
    else:
        return None
    return EtcdCluster(data_dir / "etcd", members, data_dir / "logs", data_dir / "run")


@dataclass
class Child:
    name: str
    proc: asyncio.subprocess.Process | ForkedProc
    log: Path


async def _start(name: str, args: list[str], log_dir: Path, marker: str) -> Child:
    log = log_dir / f"{name}.log"
    err = open(log, "ab")  # noqa: SIM115 - the child owns it for its whole life
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *args, stdout=asyncio.subprocess.PIPE, stderr=err,
        stdin=asyncio.subprocess.DEVNULL, start_new_session=True)
    err.close()
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            while True:
                line = await proc.stdout.readline()
                if not line:
                    why = _last_line(log)
                    raise RuntimeError(f"{name} exited before it was ready"
                                       f"{': ' + why if why else ''} (log: {log})")
                if marker in line.decode(errors="replace"):
                    break
    except TimeoutError:
        proc.kill()
        raise RuntimeError(f"{name} was not ready within {READY_TIMEOUT_S:.0f}s; see {log}") from None
    drain = asyncio.create_task(_drain(proc.stdout))
    _DRAINS.add(drain)  # held: the loop keeps only a weak reference to a task
    drain.add_done_callback(_DRAINS.discard)
    run_dir = log_dir.parent / "run"
    run_dir.mkdir(exist_ok=True)
    (run_dir / f"{name}.pid").write_text(f"{proc.pid}\n")
    return Child(name, proc, log)


async def _start_nodes(config: Path, log_dir: Path, ids: list[str],
                       beside: Callable[[], Awaitable[None]] | None = None) -> list[Child]:
    """The storage nodes, forked by one `nodes.forker` (one import for all), each ready;
    the forker comes last: it ends when its last node has. `beside()`, if given, runs
    while they start; if it fails, the nodes are stopped once each is ready (or gone)."""
    forker, forked = await start_forker(config, log_dir, ids)
    children = [Child(i, forked[i], log_dir / f"{i}.log") for i in ids]
    children.append(Child("nodes-forker", forker, log_dir / "nodes-forker.log"))
    run_dir = log_dir.parent / "run"
    run_dir.mkdir(exist_ok=True)
    try:
        got = await asyncio.gather(  # all of them ended: each node forked (so stoppable) or gone
            *(until_ready(forked[i], READY_TIMEOUT_S) for i in ids),
            *([beside()] if beside is not None else []), return_exceptions=True)
        for failed in got:
            if isinstance(failed, BaseException):
                raise failed
        states = got[:len(ids)]
        for c, state in zip(children, states, strict=False):
            if state == "exited" and forked[c.name].pid is None:  # the forker failed first
                forker_log = children[-1].log
                why = _last_line(forker_log)
                raise RuntimeError(f"nodes-forker exited before it started {c.name}"
                                   f"{': ' + why if why else ''} (log: {forker_log})")
            if state == "exited":
                why = _last_line(c.log)
                raise RuntimeError(f"{c.name} exited before it was ready"
                                   f"{': ' + why if why else ''} (log: {c.log})")
            if state == "timeout":
                raise RuntimeError(f"{c.name} was not ready within {READY_TIMEOUT_S:.0f}s; "
                                   f"see {c.log}")
            (run_dir / f"{c.name}.pid").write_text(f"{forked[c.name].pid}\n")
    except BaseException:
        await _stop_all(children)
        raise
    return children


def _last_line(log: Path) -> str:
    """The last line a child wrote to its log (its one-line error), if short enough to show."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            lines = f.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines and len(lines[-1]) < 400 else ""


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


def _derived(cfg: Config) -> dict[str, str]:
    """The tessera.env values the config decides (endpoints, region), not the credentials."""
    return {"AWS_ENDPOINT_URL": f"http://{cfg.gateway.listen}",
            "AWS_DEFAULT_REGION": cfg.gateway.region,
            ENV_ADMIN_URL: f"http://{cfg.gateway.admin_listen}"}


def refresh_env(cfg: Config) -> dict[str, str]:
    """A later start: tessera.env's credentials kept, its endpoints and region rewritten from
    the config as it is now (a region or port changed in tessera.toml since the first start
    left clients signing for the old region, each request refused)."""
    env = read_env(cfg.data_dir)
    fresh = {**env, **_derived(cfg)}
    if fresh != env:
        write_env(cfg.data_dir, fresh)
    return fresh


async def bootstrap(config: Path) -> dict[str, str]:
    """First start: default tenant, its access key and the admin credential."""
    cfg = load_config(config)
    if env_path(cfg.data_dir).exists():
        return refresh_env(cfg)
    from storage.cluster import Cluster  # here: `tessera up` imports it beside the nodes' start

    cluster = await Cluster.open(cfg, probe=False)
    try:
        await cluster.tenants.create("default")
        cred = await cluster.tenants.create_key("default")
        admin = await cluster.tenants.create_key("_admin", role="admin")
    finally:
        await cluster.close()
    env = {
        **_derived(cfg),
        "AWS_ACCESS_KEY_ID": cred.access_key,
        "AWS_SECRET_ACCESS_KEY": cred.secret_key,
        ENV_ADMIN_ACCESS_KEY: admin.access_key,
        ENV_ADMIN_SECRET_KEY: admin.secret_key,
        ENV_CONFIG: str(config),
    }
    write_env(cfg.data_dir, env)
    return env


async def run(data_dir: Path, port: int | None = None, node_port: int | None = None,
              admin_port: int | None = None,
              metadata: str = "sqlite", etcd_port: int = 2379, etcd_peer_port: int = 2380,
              day_seconds: float | None = None, gateways: int = 1,
              inline_max_bytes: int | None = None) -> int:
    """Start (or restart) the cluster of `data_dir`; ports given on a restart move it there."""
    data_dir = data_dir.resolve()
    if gateways < 1:
        raise RuntimeError("--gateways must be at least 1")
    if gateways > 1 and metadata != "etcd" and not (data_dir / "etcd" / "members.json").exists():
        raise RuntimeError(f"--gateways {gateways} needs --metadata etcd: SQLite metadata "
                           "lives on one machine and serves a single gateway")
    fresh = not data_dir.exists()
    lock = lock_data_dir(data_dir)  # before anything reads or rewrites the data directory
    try:
        code = await _run_locked(data_dir, port, node_port, admin_port, metadata, etcd_port,
                                 etcd_peer_port, day_seconds, gateways, inline_max_bytes)
    finally:
        if fresh:
            _drop_unused(data_dir)
        os.close(lock)
    print(f"Tessera stopped: every process it started has exited; data kept in {data_dir}",
          flush=True)
    return code


def _drop_unused(data_dir: Path) -> None:
    """A directory this start made and left holding only its lock (the start was refused,
    a port taken): removed, lock and all, while the lock is still held, so a refused start
    leaves nothing behind."""
    lock = data_dir / "tessera.lock"
    if [p.name for p in data_dir.iterdir()] == [lock.name]:
        lock.unlink()
        data_dir.rmdir()


LEFT_EXIT_S = 10.0  # how long a start waits for a stopped cluster's processes to exit


def lock_data_dir(data_dir: Path) -> int:
    """Hold DATA/tessera.lock (flock) for this process's life: one `tessera up` per directory.

    Two clusters on one directory would share its metadata and shard files (two writers), and
    the second would rewrite the first's config and tessera.env with its own ports.
    """
    if data_dir.exists() and not data_dir.is_dir():
        raise RuntimeError(f"--data {data_dir} is a file; name a directory (new or a "
                           "cluster's)")
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / "tessera.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise RuntimeError(f"{data_dir} is in use by another `tessera up` (pid {owner}); stop "
                           "it first (Ctrl-C), or choose another --data") from None
    left = left_running(data_dir)
    if left:
        os.close(fd)
        raise RuntimeError(f"{data_dir} is still served by processes an earlier `tessera up` "
                           f"left running (pids {' '.join(map(str, left))}): stop them "
                           f"(kill {' '.join(map(str, left))}) first, or choose another --data")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def left_running(data_dir: Path, wait_s: float | None = None) -> list[int]:
    """Pids of the directory's gateway, node forker or nodes (DATA/run/*.pid) still alive
    once the lock is free: a `tessera up` killed with -9 leaves them serving the directory,
    and its lock died with it. Waits (bounded) for ones still exiting after a clean stop."""
    config = str(data_dir / "tessera.toml").encode()
    deadline = time.monotonic() + (LEFT_EXIT_S if wait_s is None else wait_s)
    while True:
        alive = []
        for pidfile in sorted((data_dir / "run").glob("*.pid")):
            try:
                pid = int(pidfile.read_text().split()[0])
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmdline = f.read()
            except (OSError, ValueError, IndexError):
                continue  # gone (or never written whole): not running
            if config in cmdline.split(b"\0"):  # ours, not a reused pid
                alive.append(pid)
        if not alive or time.monotonic() >= deadline:
            return sorted(set(alive))
        time.sleep(0.1)


def first_start_note(config: Path, day_seconds: float | None,
                     inline_max_bytes: int | None) -> str | None:
    """The note for first-start options given again on a restart: they are ignored, and
    which tessera.toml key to edit instead (a key the file may not hold yet)."""
    keys = [(f, k) for f, v, k in (
        ("--day-seconds", day_seconds, "[archive] day_seconds (lifecycle and restore day; "
         "also lower [archive] lifecycle_interval_s to a tenth of it)"),
        ("--inline-max-bytes", inline_max_bytes, "[cluster] inline_max_bytes"))
        if v is not None]
    if not keys:
        return None
    return (f"note: {', '.join(f for f, _ in keys)} apply at first start only; to change "
            f"them, stop the cluster and set {'; '.join(k for _, k in keys)} in {config} "
            "(add the key if missing)")


async def _run_locked(data_dir: Path, port: int | None, node_port: int | None,
                      admin_port: int | None, metadata: str, etcd_port: int,
                      etcd_peer_port: int, day_seconds: float | None, gateways: int,
                      inline_max_bytes: int | None) -> int:
    config = data_dir / "tessera.toml"
    if config.exists():
        for change in move_ports(config, port, admin_port, node_port):
            print(f"ports moved: {change}", flush=True)
        note = first_start_note(config, day_seconds, inline_max_bytes)
        if note:
            print(note, flush=True)
        gw = load_config(config).gateway
        listens = gateway_listens(gw.listen, gw.admin_listen, gateways)
    else:
        port, admin_port = port or 9000, admin_port or 9001
        node_port = node_port or 9100
        listens = gateway_listens(f"127.0.0.1:{port}", f"127.0.0.1:{admin_port}", gateways)
    if len({a for pair in listens for a in pair}) < 2 * gateways:
        raise RuntimeError(f"--gateways {gateways}: the S3 and admin ports overlap "
                           f"({', '.join(a for pair in listens for a in pair)}); choose "
                           f"--admin-port {int(listens[-1][0].rpartition(':')[2]) + 1} or "
                           "higher (at first start)")
    data_dir.mkdir(parents=True, exist_ok=True)
    secure_tree(data_dir, list((data_dir / "nodes").glob("*/shards")))  # nodes do their shards
    etcd = _local_etcd(data_dir, metadata, etcd_port, etcd_peer_port)
    if etcd is not None:
        await asyncio.to_thread(etcd.start)
    try:
        return await _run(data_dir, config, port, node_port, admin_port, etcd, day_seconds,
                          gateways, inline_max_bytes)
    finally:
        if etcd is not None:  # stopped last: nodes and gateway are gone by now
            await asyncio.to_thread(etcd.stop)


async def _run(data_dir: Path, config: Path, port: int | None, node_port: int | None,
               admin_port: int | None, etcd: EtcdCluster | None,
               day_seconds: float | None = None, gateways: int = 1,
               inline_max_bytes: int | None = None) -> int:
    if not config.exists():
        assert port and node_port and admin_port
        eps = etcd.endpoints if etcd is not None else ()
        # Checked before it is kept: a first start refused for a bad option or a taken port
        # must not leave a config that makes every later start fail the same way.
        draft = config.with_name("tessera.toml.new")
        draft.write_text(default_config(data_dir, port, node_port, admin_port, eps,
                                        day_seconds, inline_max_bytes,
                                        etcd.client_tls if etcd is not None else None))
        try:
            cfg = load_config(draft)
            check_free(cfg, gateway_listens(cfg.gateway.listen, cfg.gateway.admin_listen,
                                            gateways))
        except BaseException:
            draft.unlink(missing_ok=True)
            raise
        os.replace(draft, config)
    cfg = load_config(config)
    listens = gateway_listens(cfg.gateway.listen, cfg.gateway.admin_listen, gateways)
    check_free(cfg, listens)
    log_dir = data_dir / "logs"
    log_dir.mkdir(exist_ok=True)
    children: list[Child] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watch_starters(loop, stop.set)  # a SIGKILLed test run stops its clusters too
    try:
        # the first start's tenant and keys are written while the nodes start (they need no
        # metadata); the gateway, which reads them, starts after both
        env: dict[str, str] = {}

        async def first_start() -> None:
            env.update(await bootstrap(config))

        children += await _start_nodes(config, log_dir, [n.id for n in cfg.nodes],
                                       beside=first_start)
        children.append(await _start("gateway", ["-m", "gateway", "--config", str(config),
                                                 "--log-file", str(log_dir / "gateway.log")],
                                     log_dir, "gateway ready"))
        extra = listens[1:]
        children += await asyncio.gather(*(
            _start(f"gateway{i}", ["-m", "gateway", "--config", str(config), "--listen", s3,
                                   "--admin-listen", adm, "--log-file",
                                   str(log_dir / f"gateway{i}.log")], log_dir, "gateway ready")
            for i, (s3, adm) in enumerate(extra, start=2)))
        print(f"Tessera is up: {len(cfg.nodes)} nodes in {len(cfg.zones)} zones, data in "
              f"{data_dir}")
        print(f"  S3 endpoint:       {env['AWS_ENDPOINT_URL']}")
        print(f"  region:            {env['AWS_DEFAULT_REGION']}")
        print(f"  access key id:     {env['AWS_ACCESS_KEY_ID']}")
        print(f"  secret access key: {env['AWS_SECRET_ACCESS_KEY']}")
        print(f"  admin endpoint:    {env[ENV_ADMIN_URL]}")
        for i, (s3, adm) in enumerate(extra, start=2):
            print(f"  gateway{i}:          S3 http://{s3}  admin http://{adm}")
        if etcd is not None:
            print(f"  metadata (etcd):   {', '.join(etcd.endpoints)}")
        print(f"  environment:       set -a; . {data_dir / 'tessera.env'}; set +a")
        print("cluster ready (Ctrl-C stops it)", flush=True)
        waits = {asyncio.create_task(c.proc.wait()): c for c in children}
        stopper = asyncio.create_task(stop.wait())
        while not stop.is_set():
            done, _ = await asyncio.wait({stopper, *waits}, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t in waits:
                    c = waits.pop(t)
                    print(f"warning: {c.name} exited with status {c.proc.returncode}; see "
                          f"{c.log}; it stays down (the rest keep serving) until this "
                          "`tessera up` is stopped (Ctrl-C) and started again",
                          file=sys.stderr, flush=True)
        return 0
    finally:
        await _stop_all(children)


def gateway_listens(listen: str, admin_listen: str, count: int) -> list[tuple[str, str]]:
    """(S3, admin) listen addresses of `count` gateways on consecutive ports."""
    host, _, port = listen.rpartition(":")
    ahost, _, aport = admin_listen.rpartition(":")
    return [(f"{host}:{int(port) + i}", f"{ahost}:{int(aport) + i}") for i in range(count)]


async def _stop_all(children: list[Child], grace_s: float = 15) -> None:
    """SIGTERM every child, then SIGKILL those still running `grace_s` after: one grace for
    all (waited child by child, each stuck child used to add its own 15 s)."""
    for c in reversed(children):
        if c.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                c.proc.terminate()
    deadline = asyncio.get_running_loop().time() + grace_s
    for c in children:
        try:
            left = max(0.1, deadline - asyncio.get_running_loop().time())
            await asyncio.wait_for(c.proc.wait(), left)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                c.proc.kill()
            try:  # bounded: a process we cannot signal must not hang the shutdown
                await asyncio.wait_for(c.proc.wait(), 15)
            except TimeoutError:
                print(f"warning: {c.name} (pid {c.proc.pid}) did not stop; stop it with "
                      f"kill -9 {c.proc.pid}", file=sys.stderr, flush=True)
