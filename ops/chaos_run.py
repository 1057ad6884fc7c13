"""`tessera chaos`, the run: start the cluster, drive the workload and the nemesis, heal, then
check every acknowledged write against the model and print the report (exit 1 on any loss).

The parts it drives (cluster, workload, nemesis, model) are in ops/chaos.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ops.chaos import (
    ALL_FAULTS,
    BUCKET,
    FAULTS,
    OPT_IN,
    Model,
    Nemesis,
    Report,
    Workload,
    digest,
    schedule,
    zone_of,
)
from ops.chaos_cluster import FAST_ENV, ChaosCluster

CHAOS_MARK = ".tessera-chaos"  # in a --data directory chaos made (it may take faults)


def wait_redundant(c: ChaosCluster, timeout: float) -> dict[str, Any] | None:
    """The first status showing full redundancy (None if it never came within `timeout`)."""
    from ops.admincli import CliError
    from storage.clusterstatus import fully_redundant

    since = time.time()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(CliError, KeyError, OSError):
            doc = c.status()
            if fully_redundant(doc, since):
                return doc
        time.sleep(0.5)
    return None


def live_lies(c: ChaosCluster, lies: list[tuple[Path, bytes]]) -> list[str]:
    """The lies still served: the file still holds the lie and its stripe's manifest still
    names that node for that shard index (a rebuilt, moved or collected shard is no lie)."""
    import asyncio

    from storage.config import load_config
    from storage.metadata import open_store
    from storage.shards.ids import parse_shard_id
    from storage.workers.repair import Manifest, load_manifest

    async def check() -> list[str]:
        cfg = load_config(c.data / "tessera.toml")
        meta = await open_store(cfg.metadata_backend, str(cfg.data_dir / cfg.metadata_path),
                                cfg.etcd_endpoints, cfg.etcd_tls)
        left = []
        try:
            for path, lie in lies:
                try:
                    if path.read_bytes() != lie:
                        continue
                except FileNotFoundError:
                    continue
                stripe, index = parse_shard_id(path.name)
                node = path.parts[-5]  # nodes/<node>/shards/<ab>/<cd>/<id>
                man = await load_manifest(meta, stripe)
                if isinstance(man, Manifest) and index < len(man.part.nodes) and \
                        man.part.nodes[index] == node:
                    left.append(f"{path.name} on {node}: still lying")
        finally:
            await meta.close()
        return left

    return asyncio.run(check())


def wait_lies_repaired(c: ChaosCluster, report: Report, timeout: float) -> None:
    """Wait for every live lie to be found (reads or the deep scrub) and rebuilt."""
    deadline = time.monotonic() + timeout
    while True:
        report.lies_left = live_lies(c, report.lies) if report.lies else []
        if not report.lies_left or time.monotonic() > deadline:
            return
        time.sleep(0.5)


def verify(c: ChaosCluster, model: Model, report: Report) -> None:
    from botocore.exceptions import ClientError

    s3 = c.s3()
    for key in sorted(model.possible):
        for attempt in range(3):
            try:
                got: bytes | None = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "NoSuchKey":
                    if attempt == 2:
                        report.lost.append(f"{key}: {exc.response['Error']['Code']}")
                        break
                    time.sleep(1)
                    continue
                got = None
            if not model.allows(key, digest(got)):
                report.lost.append(f"{key}: content is not an acknowledged state")
            break
    listed = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        listed |= {o["Key"] for o in page.get("Contents", [])}
    for key in listed - set(model.possible):
        report.lost.append(f"{key}: listed but never written")


def run(duration: float, seed: int, data: Path | None, keep: bool, repair_timeout: float,
        out: Any = sys.stdout, kinds: tuple[str, ...] = FAULTS) -> int:
    tmp = None
    if data is None:
        tmp = tempfile.mkdtemp(prefix="tessera-chaos-")
        data = Path(tmp)
    env = {**os.environ, **FAST_ENV}
    c = ChaosCluster(data.resolve(), env)
    report = Report()
    model = Model()
    try:
        c.start()
        s3 = c.s3()
        with contextlib.suppress(Exception):
            s3.create_bucket(Bucket=BUCKET)
        zones = sorted({zone_of(c.data, n) for n in c.node_ids()})
        plan = schedule(seed, duration, c.node_ids(), zones, kinds)
        w = Workload(c, seed, report, model)
        nem = Nemesis(c, w, report, seed, out)
        worker = threading.Thread(target=w.run, daemon=True)
        start = time.monotonic()
        worker.start()
        for f in plan:
            delay = f.at - (time.monotonic() - start)
            if delay > 0:
                time.sleep(delay)
            print(f"  t={f.at:6.1f}s  {f.kind:13} {f.target} ({f.hold}s)", file=out, flush=True)
            nem.inject(f)
        rest = duration - (time.monotonic() - start)
        if rest > 0:
            time.sleep(rest)
        w.stop.set()
        worker.join(60)
        # heal: every node running and thawed
        for nid in c.node_ids():
            c.signal(nid, signal.SIGCONT)
        for nid in sorted(c.stopped):
            c.restart_node(nid)
        wait_lies_repaired(c, report, repair_timeout)
        doc = wait_redundant(c, repair_timeout)
        report.redundant = doc is not None
        if doc is not None:
            report.repaired_shards = int(doc["repair"].get("shards_rebuilt", 0))
        w.finish()  # the uploads left open: their parts sat through the faults
        verify(c, model, report)
    finally:
        c.stop()
        if tmp is not None and not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print_report(report, seed, duration, out)
    ok = not report.lost and not report.wrong and not report.lies_left and report.redundant
    return 0 if ok else 1


def print_report(r: Report, seed: int, duration: float, out: Any) -> None:
    rows = [("seed", seed), ("duration s", duration),
            *((f"ops {k}", v) for k, v in sorted(r.ops.items())),
            *((f"faults {k}", v) for k, v in sorted(r.faults.items())),
            ("ops failed (unavailable)", r.unavailable), ("shards repaired", r.repaired_shards),
            ("wrong reads", len(r.wrong)), ("objects lost", len(r.lost)),
            ("lying shards injected", len(r.lies)), ("lying shards left", len(r.lies_left)),
            ("redundancy restored", "yes" if r.redundant else "NO")]
    width = max(len(k) for k, _ in rows)
    print("\nCHAOS REPORT", file=out)
    for k, v in rows:
        print(f"  {k.ljust(width)}  {v}", file=out)
    for line in (r.wrong + r.lost + r.lies_left)[:20]:
        print(f"  ! {line}", file=out)
    print(json.dumps({"lost": len(r.lost), "wrong": len(r.wrong), "redundant": r.redundant,
                      "lies_left": len(r.lies_left)}), file=out, flush=True)


def chaos_command(a: argparse.Namespace) -> int:
    try:
        import boto3  # noqa: F401
    except ImportError:
        print("tessera chaos: needs boto3 for its workload: pip install boto3 (or, in "
              "the source tree, pip install -e '.[test]')", file=sys.stderr)
        return 2
    kinds = tuple(k.strip() for k in a.faults.split(",")) if a.faults else FAULTS
    unknown = [k for k in kinds if k not in ALL_FAULTS]
    if unknown:
        print(f"tessera chaos: unknown fault {unknown[0]!r}; choose from "
              f"{', '.join(ALL_FAULTS)}",
              file=sys.stderr)
        return 2
    data = Path(a.data) if a.data else None
    if data is not None and not chaos_may_use(data):
        print(f"tessera chaos: {data} holds data chaos did not make (it kills nodes, flips "
              "bits and plants lying shards there): give a new or empty directory, or omit "
              "--data", file=sys.stderr)
        return 2
    return run(a.duration, a.seed, data, a.keep, a.repair_timeout, kinds=kinds)


def chaos_may_use(data: Path) -> bool:
    """Whether `--data` may take faults: a new or empty directory (marked as chaos's own
    here), or one an earlier chaos run marked; never an operator's cluster."""
    if (data / CHAOS_MARK).is_file():
        return True
    if data.exists() and (not data.is_dir() or any(data.iterdir())):
        return False
    data.mkdir(parents=True, exist_ok=True)
    (data / CHAOS_MARK).write_text("made by tessera chaos: faults may be injected here\n")
    return True


def positive_seconds(text: str) -> float:
    """An argparse type: seconds > 0 (a negative duration would run no faults yet pass)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number of seconds {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


def add_chaos_command(sub: Any) -> None:
    p = sub.add_parser("chaos", help="seeded faults against a local cluster; checks no loss")
    p.add_argument("--duration", type=positive_seconds, default=60.0,
                   help="seconds of workload + faults")
    p.add_argument("--seed", type=int, default=1, help="seed of the schedule and workload")
    p.add_argument("--data", help="data directory: new or empty, or an earlier chaos run's "
                   "(default: a new temporary directory)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--faults", default="",
                   help=f"comma-separated fault kinds to inject (default: {','.join(FAULTS)}; "
                   f"also {','.join(OPT_IN)})")
    p.add_argument("--repair-timeout", type=positive_seconds, default=180.0,
                   help="seconds to wait for full redundancy after healing")
    p.set_defaults(func=chaos_command)
