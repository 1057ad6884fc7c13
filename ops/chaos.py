"""`tessera chaos`, its parts: a seeded workload plus a nemesis against a local cluster, then a check.

It starts `tessera up` in a temporary directory (or `--data`), runs PUT/GET/DELETE (and
multipart when the gateway supports it) while a nemesis injects one fault at a time: kill -9
and restart a node, a whole zone down and back, flipped bits in or deletion of a shard file,
a shard rewritten with other bytes under valid frame checksums (a lying shard: only
the GCM tag can tell), a frozen node (SIGSTOP/SIGCONT), the gateway killed in the middle of an upload (the whole
cluster is then restarted over the same directory), a zone partitioned (its node addresses
stop answering: iptables DROP, root only) and a node whose disk is full (it runs on a full
tmpfs for a while; root only); on request (`--faults zone_then_kills`) a zone outage
followed, once the zone is back, by one node killed in each other zone, and
(`--faults crash_cluster`) every process of the cluster killed -9 at once, then started
again over the same directory, and (`--faults fill_meta`) the metadata directory's file
system full for a while under the running cluster (root only). The workload also keeps multipart uploads open across the
faults (parts acknowledged, completed later; those still open are completed after healing,
and one that cannot be is a loss). Then it heals, waits for repair and
checks every key against a model of what was acknowledged: acknowledged writes read back
byte-identical, acknowledged deletes stay deleted, an unacknowledged write is either absent
or complete, every stripe is back to k+m healthy shards, zone-safely, and no shard that was
made to lie is still named by a manifest with its lie. Exit status 1 on
any loss. The same seed gives the same fault schedule and the same operation sequence.
"""

from __future__ import annotations

import contextlib
import filecmp
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ops.chaos_cluster import ChaosCluster
from storage.pids import pid_alive

BUCKET = "chaos"
FAULTS = ("kill_node", "zone_down", "bitflip", "delete_shard", "slow_node", "kill_gateway",
          "partition_zone", "fill_disk", "lying_shard")
WEIGHTS = (3, 1, 2, 2, 2, 1, 1, 1, 2)
# Faults run only when asked for (`--faults`): a zone outage, then, once the zone is back,
# two more nodes killed (one in each other zone) while the workload goes on; and every
# process of the cluster killed -9 at once, then started again (the kernel and its page
# cache live on: this is not a power loss, and it does not test fsync).
OPT_IN = {"zone_then_kills": 1, "crash_cluster": 1, "fill_meta": 1}
ALL_FAULTS = (*FAULTS, *OPT_IN)
HEADER_BYTES = 44
OPEN_UPLOADS_MAX = 4  # uploads the workload keeps open at once (then it completes one)
LIE_TRIES = 64  # shard files a lying_shard fault tries before it gives up (a gone one is skipped)



@dataclass(frozen=True)
class Fault:
    at: float  # seconds after the start
    kind: str
    target: str  # node id, zone, or "" (random file picked with the same RNG)
    hold: float  # seconds the fault lasts (kill, zone, slow)
    pick: int  # deterministic choice among files / offsets


def schedule(seed: int, duration: float, node_ids: list[str], zones: list[str],
             kinds: tuple[str, ...] = FAULTS) -> list[Fault]:
    """The fault schedule of a run: a pure function of the seed, duration and fault kinds."""
    rnd = random.Random(f"nemesis-{seed}")
    out: list[Fault] = []
    t = rnd.uniform(2.0, 4.0)
    weights = [dict(zip(FAULTS, WEIGHTS, strict=True)).get(k) or OPT_IN[k] for k in kinds]
    while t < duration:
        kind = rnd.choices(kinds, weights)[0]
        zonal = kind in ("zone_down", "partition_zone", "zone_then_kills")
        target = rnd.choice(zones) if zonal else rnd.choice(node_ids)
        if kind == "kill_gateway":
            target = "gateway"
        elif kind == "fill_meta":
            target = "metadata"
        elif kind in ("bitflip", "delete_shard", "lying_shard"):
            target = "random shard"
        hold = rnd.uniform(1.5, 4.0)
        out.append(Fault(round(t, 2), kind, target, round(hold, 2), rnd.randrange(1 << 30)))
        t += hold + rnd.uniform(2.0, 5.0)
    return out


def content(seed: int, key: str, n: int, size: int) -> bytes:
    return random.Random(f"{seed}/{key}/{n}").randbytes(size)


def multipart_etag(body: bytes) -> str:
    """The ETag of `body` uploaded as the workload's parts (5 MiB, then the rest)."""
    cut = 5 * 2**20
    parts = [c for n, c in enumerate((body[:cut], body[cut:]), start=1) if c or n == 1]
    return hashlib.md5(b"".join(hashlib.md5(c).digest() for c in parts)).hexdigest() + \
        f"-{len(parts)}"


def digest(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


@dataclass
class Model:
    """Per key, the set of states it may be in (digest or None = absent)."""

    possible: dict[str, set[str | None]] = field(default_factory=dict)

    def acked(self, key: str, d: str | None) -> None:
        self.possible[key] = {d}

    def unsure(self, key: str, d: str | None) -> None:
        self.possible.setdefault(key, {None}).add(d)

    def allows(self, key: str, d: str | None) -> bool:
        return d in self.possible.get(key, {None})


@dataclass
class Report:
    ops: Counter = field(default_factory=Counter)
    faults: Counter = field(default_factory=Counter)
    unavailable: int = 0
    wrong: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    repaired_shards: int = 0
    redundant: bool = False
    lies: list[tuple[Path, bytes]] = field(default_factory=list)  # shard files made to lie
    lies_left: list[str] = field(default_factory=list)  # ...still named with their lie


class Workload:
    """A seeded sequence of S3 operations, checked against the model as it goes."""

    def __init__(self, cluster: ChaosCluster, seed: int, report: Report, model: Model,
                 keys: int = 24) -> None:
        self.c = cluster
        self.seed = seed
        self.rnd = random.Random(f"workload-{seed}")
        self.report = report
        self.model = model
        self.keys = [f"k{i:03d}" for i in range(keys)]
        self.version: Counter = Counter()
        # Uploads with every part acknowledged and not completed yet: (key, upload id,
        # body). Their parts sit through the faults as parts; `finish` completes the rest.
        self.open: list[tuple[str, str, bytes]] = []
        # uploads a completion was sent for -> (the key's write count after the last
        # attempt, whether only this upload's attempts wrote the key since the first)
        self.tried: dict[str, tuple[int, bool]] = {}
        self.writes: Counter = Counter()  # writes (attempted) per key
        self.stop = threading.Event()
        self.lock = threading.Lock()  # held across one operation (the nemesis may restart)

    def run(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                self.one()

    def one(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        op = self.rnd.choices(("put", "get", "delete", "multipart", "open", "complete"),
                              (5, 6, 2, 1, 1, 1))[0]
        if not self.report.ops["open"]:
            op = "open"  # one upload open from the start: its parts sit through the faults
        elif op == "open" and len(self.open) >= OPEN_UPLOADS_MAX:
            op = "complete"
        key = self.rnd.choice(self.keys)
        size = self.rnd.choice((0, 1, 4096, 300_000, 1_500_000, 3_000_000))
        self.report.ops[op] += 1
        s3 = self.c.s3()
        try:
            if op in ("put", "multipart", "delete"):
                self.writes[key] += 1
            if op == "put":
                self.version[key] += 1
                body = content(self.seed, key, self.version[key], size)
                self.model.unsure(key, digest(body))
                s3.put_object(Bucket=BUCKET, Key=key, Body=body)
                self.model.acked(key, digest(body))
            elif op == "multipart":
                self.version[key] += 1
                body = content(self.seed, key, self.version[key], 5 * 2**20 + size)
                self.model.unsure(key, digest(body))
                if self._multipart(s3, key, body):
                    self.model.acked(key, digest(body))
            elif op == "open":
                self.version[key] += 1
                body = content(self.seed, key, self.version[key], 5 * 2**20 + size)
                self._open(s3, key, body)
            elif op == "complete":
                if self.open:
                    self._complete(s3, *self.open[0])
            elif op == "delete":
                self.model.unsure(key, None)
                s3.delete_object(Bucket=BUCKET, Key=key)
                self.model.acked(key, None)
            else:
                try:
                    got: bytes | None = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
                except ClientError as exc:
                    if exc.response["Error"]["Code"] != "NoSuchKey":
                        raise
                    got = None
                if not self.model.allows(key, digest(got)):
                    self.report.wrong.append(f"{key}: read {len(got or b'')} unexpected bytes")
        except (ClientError, BotoCoreError, OSError):
            self.report.unavailable += 1

    def _open(self, s3: Any, key: str, body: bytes) -> None:
        """Start an upload and upload its parts (5 MiB, then the rest); left open."""
        up = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
        cut = 5 * 2**20
        for n, chunk in enumerate((body[:cut], body[cut:]), start=1):
            if chunk or n == 1:
                s3.upload_part(Bucket=BUCKET, Key=key, UploadId=up, PartNumber=n, Body=chunk)
        self.open.append((key, up, body))

    def _complete(self, s3: Any, key: str, up: str, body: bytes) -> None:
        """Complete an open upload from its listed parts; it leaves `open` once
        acknowledged, or once a retry finds it gone. Gone, an earlier attempt whose answer
        did not arrive must have completed it: the key holds the upload's object (its
        multipart ETag) unless the key was written since; otherwise the upload's
        acknowledged parts vanished without their object, a loss."""
        from botocore.exceptions import ClientError

        self.model.unsure(key, digest(body))
        retry = up in self.tried
        last, clean = self.tried.get(up, (self.writes[key], True))
        self.writes[key] += 1
        # clean: no other write to the key since this upload's first completion attempt
        self.tried[up] = (self.writes[key], clean and last == self.writes[key] - 1)
        try:
            parts = s3.list_parts(Bucket=BUCKET, Key=key, UploadId=up).get("Parts", [])
            s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=up,
                                         MultipartUpload={"Parts": [
                                             {"PartNumber": p["PartNumber"], "ETag": p["ETag"]}
                                             for p in parts]})
        except ClientError as exc:
            if retry and exc.response["Error"]["Code"] == "NoSuchUpload":
                self.open.remove((key, up, body))
                self._completed_earlier(s3, key, up, body)
                return
            raise
        self.model.acked(key, digest(body))
        self.open.remove((key, up, body))

    def _completed_earlier(self, s3: Any, key: str, up: str, body: bytes) -> None:
        """A retried completion found its upload gone: acknowledged if the key holds the
        upload's object, lost if it does not and nothing else wrote the key since the
        first attempt (a write since may have replaced the object: left unsure)."""
        from botocore.exceptions import ClientError

        try:
            etag: str | None = s3.head_object(Bucket=BUCKET, Key=key)["ETag"].strip('"')
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in ("404", "NoSuchKey"):
                raise
            etag = None
        if etag == multipart_etag(body):
            self.model.acked(key, digest(body))
            self.report.ops["completed-earlier"] += 1
        elif self.tried[up][1]:
            self.report.lost.append(f"{key}: upload {up[:12]} gone but its object is not "
                                    f"there (ETag {etag})")

    def finish(self) -> None:
        """Complete every upload still open (after healing): a failure is a lost part."""
        from botocore.exceptions import BotoCoreError, ClientError

        s3 = self.c.s3(attempts=3)
        for key, up, body in list(self.open):
            try:
                self._complete(s3, key, up, body)
            except (ClientError, BotoCoreError) as exc:
                self.report.lost.append(f"{key}: open upload {up[:12]} did not complete: {exc}")

    def _multipart(self, s3: Any, key: str, body: bytes) -> bool:
        from botocore.exceptions import ClientError

        try:
            up = s3.create_multipart_upload(Bucket=BUCKET, Key=key)
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("NotImplemented", "MethodNotAllowed"):
                self.report.ops["multipart-unsupported"] += 1
                s3.put_object(Bucket=BUCKET, Key=key, Body=body)
                return True
            raise
        cut = 5 * 2**20
        parts = []
        for n, chunk in enumerate((body[:cut], body[cut:]), start=1):
            if chunk or n == 1:
                r = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=up["UploadId"],
                                   PartNumber=n, Body=chunk)
                parts.append({"PartNumber": n, "ETag": r["ETag"]})
        s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=up["UploadId"],
                                     MultipartUpload={"Parts": parts})
        return True


class Nemesis:
    def __init__(self, cluster: ChaosCluster, workload: Workload, report: Report,
                 seed: int, out: Any = sys.stdout) -> None:
        self.out = out
        self.c = cluster
        self.w = workload
        self.report = report
        self.seed = seed

    def inject(self, f: Fault) -> None:
        self.report.faults[f.kind] += 1
        zones = {nid: zone_of(self.c.data, nid) for nid in self.c.node_ids()}
        if f.kind == "kill_node":
            self._outage([f.target], f.hold)
        elif f.kind == "zone_down":
            self._outage([n for n, z in zones.items() if z == f.target], f.hold)
        elif f.kind == "zone_then_kills":
            self._zone_then_kills(f, zones)
        elif f.kind == "slow_node":
            self.c.signal(f.target, signal.SIGSTOP)
            time.sleep(f.hold)
            self.c.signal(f.target, signal.SIGCONT)
        elif f.kind in ("bitflip", "delete_shard"):
            files = self.c.shard_files()
            if files:
                victim = files[f.pick % len(files)]
                with contextlib.suppress(OSError):
                    if f.kind == "delete_shard":
                        victim.unlink()
                    else:
                        size = victim.stat().st_size
                        off = HEADER_BYTES + (f.pick % max(1, size - HEADER_BYTES))
                        with open(victim, "r+b") as fh:
                            fh.seek(min(off, size - 1))
                            b = fh.read(1)
                            fh.seek(-1, os.SEEK_CUR)
                            fh.write(bytes([(b[0] if b else 0) ^ (1 << (f.pick % 8))]))
        elif f.kind == "lying_shard":
            from storage.errors import StorageError
            from storage.testing.lies import lie_about

            # The picked file may be gone (GC of a deleted object) or still being written (no
            # whole header yet): the next one is taken then, so every lying_shard fault plants
            # one lie whatever the timing (a run's count of lies does not depend on the load).
            files = self.c.shard_files()
            for i in range(min(len(files), LIE_TRIES)):
                victim = files[(f.pick + i) % len(files)]
                with contextlib.suppress(OSError, ValueError, StorageError):  # GC, bad header
                    self.report.lies.append((victim, lie_about(victim, f.pick, None)))
                    break
        elif f.kind == "kill_gateway":
            self._kill_gateway_mid_upload(f)
        elif f.kind == "partition_zone":
            self._partition_zone(f, [n for n, z in zones.items() if z == f.target])
        elif f.kind == "fill_disk":
            self._fill_disk(f)
        elif f.kind == "fill_meta":
            self._fill_meta(f)
        elif f.kind == "crash_cluster":
            self.c.crash()  # in the middle of whatever the workload is doing
            with self.w.lock:  # the workload pauses while the cluster starts again
                self.c.start()

    def _outage(self, victims: list[str], hold: float) -> None:
        """Kill `victims`, keep them down for `hold` seconds, restart them."""
        for n in victims:
            self.c.kill_node(n)
        time.sleep(hold)
        for n in victims:
            self.c.restart_node(n)

    def _zone_then_kills(self, f: Fault, zones: dict[str, str]) -> None:
        """The zone's nodes killed for `hold` (writes go on), restarted; then one standard
        node in each other zone killed for `hold`: within the tolerance, but the stripes
        written during the outage are at k until repair catches up."""
        from storage.config import load_config

        cfg = load_config(self.c.data / "tessera.toml")
        role = {n.id: n.role for n in cfg.nodes}
        self._outage([n for n, z in zones.items() if z == f.target], f.hold)
        rnd = random.Random(f.pick)
        more = [rnd.choice(sorted(n for n, z in zones.items() if z == other
                                  and role[n] == "standard"))
                for other in sorted(set(zones.values()) - {f.target})]
        self._outage(more, f.hold)

    def _partition_zone(self, f: Fault, victims: list[str]) -> None:
        """The zone's node addresses stop answering (packets dropped, not refused)."""
        from storage.config import load_config

        cfg = load_config(self.c.data / "tessera.toml")
        rules = []
        for n in cfg.nodes:
            if n.id in victims:
                host, _, port = n.address.rpartition(":")
                rules.append(["-p", "tcp", "-d", host, "--dport", port, "-m", "comment",
                              "--comment", "tessera-chaos", "-j", "DROP"])
        if shutil.which("iptables") is None:
            self.report.faults["partition_zone skipped (no iptables)"] += 1
            print("  partition_zone skipped: iptables not found (Debian: apt install iptables; "
                  "needs root)", file=self.out, flush=True)
            return
        added = []
        try:
            for r in rules:
                if subprocess.run(["iptables", "-I", "INPUT", *r],
                                  capture_output=True).returncode != 0:
                    self.report.faults["partition_zone skipped (no iptables)"] += 1
                    return
                added.append(r)
            time.sleep(f.hold)
        finally:
            for r in added:
                subprocess.run(["iptables", "-D", "INPUT", *r], capture_output=True)

    def _fill_disk(self, f: Fault) -> None:
        """The node runs on a file system with no space left, then gets its disk back."""
        nid = f.target
        home = self.c.data / "nodes" / nid
        holder = Path(tempfile.mkdtemp(prefix="tessera-fill-"))
        try:
            self.c.kill_node(nid)
            shutil.copytree(home, holder / "before", symlinks=True)
            used = sum(p.stat().st_blocks * 512 for p in home.rglob("*") if p.is_file())
            size = used + 2 * 2**20
            if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                               str(home)], capture_output=True).returncode != 0:
                self.report.faults["fill_disk skipped (cannot mount)"] += 1
                self.c.restart_node(nid)
                return
            try:
                shutil.copytree(holder / "before", home, symlinks=True, dirs_exist_ok=True)
                with contextlib.suppress(OSError), open(home / "filler", "wb") as fh:
                    while True:
                        fh.write(bytes(1 << 16))  # until ENOSPC
                self.c.restart_node(nid)
                time.sleep(f.hold)
                self.c.kill_node(nid)
                (home / "filler").unlink(missing_ok=True)
                shutil.copytree(home, holder / "during", symlinks=True)
            finally:
                subprocess.run(["umount", "-l", str(home)], capture_output=True)
            shutil.copytree(holder / "during", home, symlinks=True, dirs_exist_ok=True)
            self.c.restart_node(nid)
        finally:
            shutil.rmtree(holder, ignore_errors=True)

    def _fill_meta(self, f: Fault) -> None:
        """The metadata's file system full for `hold` seconds while the workload goes on
        (its writes are refused), then freed: writes resume with no restart, and no process
        died meanwhile. The directory goes onto a tmpfs and back with the cluster stopped
        and the workload paused (the two restarts are not the fault)."""
        meta, keep = self.c.data / "meta", self.c.data / "meta.keep"
        with self.w.lock:
            self.c.restart_all(lambda: _onto_tmpfs(meta, keep, 32 * 2**20))
        if not os.path.ismount(meta):
            self.report.faults["fill_meta skipped (cannot mount)"] += 1
            return
        try:
            pids = self.c.processes()
            with filled(meta):
                time.sleep(f.hold)
                died = [p for p in pids if not pid_alive(p)]
            if died:
                self.report.wrong.append(f"fill_meta: processes {died} died on a full disk")
        finally:
            with self.w.lock:
                self.c.restart_all(lambda: _off_tmpfs(meta, keep))

    def _kill_gateway_mid_upload(self, f: Fault) -> None:
        with self.w.lock:  # the workload pauses: the cluster is restarted under it
            key = f"upload-{f.pick % 1000:03d}"
            body = content(self.seed, key, f.pick, 24 * 2**20)
            self.w.model.unsure(key, digest(body))
            s3 = self.c.s3()

            def upload() -> None:
                with contextlib.suppress(Exception):
                    s3.put_object(Bucket=BUCKET, Key=key, Body=body)

            t = threading.Thread(target=upload, daemon=True)
            t.start()
            time.sleep(0.3 + (f.pick % 5) / 10)
            self.c.signal("gateway", signal.SIGKILL)
            t.join(30)
            self.c.restart_all()
            if key not in self.w.keys:
                self.w.keys.append(key)


@contextlib.contextmanager
def filled(path: Path) -> Iterator[Path]:
    """`path`'s file system filled to ENOSPC by a file in it, removed on the way out
    whatever happened meanwhile (left there, it would be copied back with the metadata)."""
    filler = path / "filler"
    try:
        with contextlib.suppress(OSError), open(filler, "wb") as fh:
            while True:  # until ENOSPC
                fh.write(bytes(1 << 16))
                fh.flush()
        yield filler
    finally:
        filler.unlink(missing_ok=True)


def _onto_tmpfs(path: Path, keep: Path, spare: int) -> None:
    """`path`'s files moved onto a tmpfs mounted over it, `spare` bytes more than they
    take; left where they are when the mount fails (not root)."""
    used = sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())
    path.rename(keep)
    path.mkdir(mode=0o700)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={used + spare},mode=0700",
                       "tmpfs", str(path)], capture_output=True).returncode != 0:
        path.rmdir()
        keep.rename(path)
        return
    try:
        shutil.copytree(keep, path, symlinks=True, dirs_exist_ok=True)
    except BaseException:  # back as it was: the files on the disk, no mount
        subprocess.run(["umount", str(path)], check=True)
        path.rmdir()
        keep.rename(path)
        raise


def _off_tmpfs(path: Path, keep: Path) -> None:
    """`_onto_tmpfs` undone: the tmpfs's files back in `path`, the mount gone. They are
    copied to the disk and checked before the mount goes and before the disk's older copy
    `keep` is removed: a failed copy leaves both, never the only copy in RAM."""
    new = path.with_name(path.name + ".new")
    shutil.rmtree(new, ignore_errors=True)
    shutil.copytree(path, new, symlinks=True)
    differ = _tree_differences(path, new)
    if differ:
        raise RuntimeError(f"copying {path} off its tmpfs changed {differ[:5]}: the tmpfs "
                           f"stays mounted, the older disk copy is {keep}")
    subprocess.run(["umount", str(path)], check=True)
    path.rmdir()
    new.rename(path)
    shutil.rmtree(keep)


def _tree_differences(a: Path, b: Path) -> list[str]:
    """Relative paths whose presence or bytes differ between two directory trees."""
    names = {p.relative_to(a) for p in a.rglob("*")} | {p.relative_to(b) for p in b.rglob("*")}
    out = []
    for rel in sorted(names):
        x, y = a / rel, b / rel
        if x.is_dir() and y.is_dir():
            continue
        if not (x.is_file() and y.is_file() and filecmp.cmp(x, y, shallow=False)):
            out.append(str(rel))
    return out


def zone_of(data: Path, nid: str) -> str:
    """The zone of a node, from the cluster config `tessera up` wrote."""
    from storage.config import load_config

    return load_config(data / "tessera.toml").node(nid).zone
