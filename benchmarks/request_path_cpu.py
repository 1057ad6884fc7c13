"""A gateway with nothing but the S3 request path, to measure its CPU per request.

The real `S3Server` pipeline over a real `Cluster` (SQLite metadata with its group commit,
real keys and AES-GCM) whose nodes are in memory (`SimNodes`), with no background work: no
health probes, no workers, no cluster gauges, one process. Server CPU per request measured
against it (the shared `s3bench.py --server-pids PID`) is the request path's own cost, which
on a loaded machine the background work of a full `tessera up` hides (at 30 requests/s, its
~5% of a core of probes and leases is ~1.7 ms per request). Objects up to `--inline-max-bytes`
(default 4096, as `tessera up`) are kept in their record, as on a real cluster.

    python benchmarks/request_path_cpu.py --port 10400 &      # prints the keys, then serves
    python s3bench.py --endpoint http://127.0.0.1:10400 --access-key AK --secret-key SK \\
        --client aiohttp --size 4KiB --concurrency 16 --op put --server-pids $!
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiohttp import web  # noqa: E402

from gateway import logs  # noqa: E402
from gateway.app import s3_runner  # noqa: E402
from gateway.metrics import Metrics  # noqa: E402
from gateway.s3.server import S3Server  # noqa: E402
from storage.accesslog import AccessLogBuffer  # noqa: E402
from storage.cluster import Cluster  # noqa: E402
from storage.config import config_from_mapping  # noqa: E402
from storage.crypto.keys import FileRootKey  # noqa: E402
from storage.metadata.sqlite import SqliteStore  # noqa: E402
from storage.telemetry import TimedStore  # noqa: E402
from storage.tenants import TenantService  # noqa: E402
from storage.testing.simnodes import SimNodes  # noqa: E402


async def build(port: int, data: Path, inline_max_bytes: int,
                ) -> tuple[web.ServerRunner, Any, TimedStore]:
    """The request path serving on `port`: its runner, a tenant key, the metadata store."""
    nodes = [{"id": f"n{z * 3 + i + 1}", "zone": f"az{z + 1}",
              "address": f"127.0.{z + 1}.{i + 1}:1"} for z in range(3) for i in range(3)]
    cfg = config_from_mapping({"data_dir": str(data),
                               "cluster": {"inline_max_bytes": inline_max_bytes},
                               "profiles": {"standard": {"k": 4, "m": 2}}, "nodes": nodes},
                              data)
    meta = TimedStore(await SqliteStore.open(data / "meta.db"))
    tenants = TenantService(meta, FileRootKey(data / "root.key"))  # type: ignore[arg-type]
    await tenants.load()
    await tenants.create("bench")
    cred = await tenants.create_key("bench")
    pool = ThreadPoolExecutor(2)
    cluster = Cluster.wire(cfg, meta, tenants, SimNodes(list(cfg.nodes)),  # type: ignore[arg-type]
                           pool, pool)
    server = S3Server(cluster, cfg.gateway, Metrics(), AccessLogBuffer(cluster, 100_000))
    runner = s3_runner(server)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, cred, meta


async def serve(port: int, data: Path, inline_max_bytes: int) -> None:
    _, cred, _ = await build(port, data, inline_max_bytes)
    print(f"AK={cred.access_key} SK={cred.secret_key} endpoint=http://127.0.0.1:{port}",
          flush=True)
    await asyncio.Event().wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=10400)
    ap.add_argument("--inline-max-bytes", type=int, default=4096)
    ap.add_argument("--log-file", type=Path, help="gateway log (default: DATA/gateway.log)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="reqcpu-") as tmp:
        logs.setup("INFO", a.log_file or Path(tmp) / "gateway.log")  # every request logged
        logging.getLogger("tessera.accesslog").setLevel(logging.WARNING)
        asyncio.run(serve(a.port, Path(tmp), a.inline_max_bytes))


if __name__ == "__main__":
    main()
