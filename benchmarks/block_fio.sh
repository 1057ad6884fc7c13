#!/usr/bin/env bash
# fio on ext4 over a Tessera volume (FUSE + loop), side by side with s3backer (Debian) mounted
# on our own S3 gateway with the same 1 MiB block size. Needs root, fuse3, fio, s3backer.
#
#   benchmarks/block_fio.sh [DATA_DIR]     (starts `tessera up` unless TESSERA_CONFIG is set)
#
# Prints one table: seq 1M write/read MB/s, rand 4k write/read IOPS at iodepth 16, and the
# server CPU seconds (nodes, gateway, FUSE daemon or s3backer) spent in each target's runs,
# and that CPU per I/O fio completed (ms). Each s3backer run has a mount of its own.
# FIO_NOJOURNAL=1 adds a row for `volume mount --no-journal` (whole-extent cache).
# FIO_TESTS picks runs (default "write read randwrite randread"); FIO_PORT the gateway port
# (admin +1; FIO_NODE_PORT the first node's, default +2).
# The random-write run's file is written whole first (sequential 1 MiB writes, untimed, its
# CPU left out; FIO_OVERWRITE=0: a fresh file as before 2026-12-05 18:00, which left
# s3backer's figure to chance).
# FIO_ROUNDS=N (default 1) runs every target N times, alternating (odd rounds Tessera first,
# even rounds s3backer first; each round a fresh volume, a fresh s3backer bucket and mount),
# prints every round and then the median of each column and the rand4k-wr ratio of medians.
# FIO_MOUNT_OPTS: options for Tessera's `volume mount` (e.g. "--max-dirty-mib 256");
# FIO_ALT_OPTS adds a second Tessera row ("tessera-alt") with these options, in every round;
# FIO_NO_S3BACKER=1 leaves s3backer out (Tessera against Tessera).
# Extra columns: server CPU per I/O once the writes are settled (Tessera's journal folded by
# a checkpoint, s3backer's dirty blocks uploaded: the writes' whole cost), peak RSS (MiB) of
# the FUSE daemon or s3backer, the 1-minute load average at the runs' end, and for s3backer the 1 MiB blocks it PUT per 1,000 fio I/Os (its stats;
# FIO_S3B_STATS=1 prints its whole stats file after each run; FIO_S3B_OPTS adds options to
# s3backer's command line, e.g. "--blockCacheWriteDelay=2000").
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=$(mktemp -d /tmp/tessera-fio.XXXXXX)
DATA=${1:-$WORK/data}
SIZE=${FIO_SIZE:-256M}
RUNTIME=${FIO_RUNTIME:-20}
UP_PID=""
TESTS=${FIO_TESTS:-write read randwrite randread}
PORT=${FIO_PORT:-19800}
NODE_PORT=${FIO_NODE_PORT:-$((PORT + 2))}
S3B_DIR="$WORK/s3b"; S3B_MNT="$WORK/s3b-mnt"; S3B_LOOP=""

cleanup() {
  set +e
  mountpoint -q "$WORK/vol" && python -m ops.cli volume unmount "$WORK/vol"
  mountpoint -q "$S3B_MNT" && umount "$S3B_MNT"
  [ -n "$S3B_LOOP" ] && losetup -d "$S3B_LOOP"
  mountpoint -q "$S3B_DIR" && fusermount3 -u "$S3B_DIR"
  local left; left=$(pid_of s3backer "$S3B_DIR")  # a daemon that outlived its mount
  [ -n "$left" ] && kill "$left"
  [ -n "$UP_PID" ] && kill "$UP_PID" && wait "$UP_PID"
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ -z "${TESSERA_CONFIG:-}" ]; then
  # s3backer always addresses its bucket as a virtual host (BUCKET.localhost, which curl
  # resolves to 127.0.0.1): write the cluster config with that domain before the first start.
  mkdir -p "$DATA"
  python3 -c '
import sys
from pathlib import Path
from ops.localcluster import default_config
data = Path(sys.argv[1]).resolve()
text = default_config(data, int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[2]) + 1)
text = text.replace("[gateway]\n", "[gateway]\nvirtual_host_domain = \"localhost\"\n", 1)
(data / "tessera.toml").write_text(text)
' "$DATA" "$PORT" "$NODE_PORT"
  python -m ops.cli up --data "$DATA" --port "$PORT" --admin-port $((PORT + 1)) \
    --node-port "$NODE_PORT" \
    >"$WORK/up.log" 2>&1 &
  UP_PID=$!
  for _ in $(seq 120); do grep -q "cluster ready" "$WORK/up.log" && break; sleep 0.5; done
  set -a; . "$DATA/tessera.env"; set +a
fi

server_cpu() {  # CPU seconds so far of the processes serving the data dir (and s3backer)
  python3 - "$DATA" <<'PY'
import os, sys
tick, total = os.sysconf("SC_CLK_TCK"), 0
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        cmd = open(f"/proc/{pid}/cmdline", "rb").read()
        stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        continue
    if sys.argv[1].encode() in cmd or b"s3backer-fio" in cmd:
        total += int(stat[11]) + int(stat[12])
print("%.1f" % (total / tick))
PY
}

pid_of() {  # the pid whose command line holds every argument (none: empty)
  python3 - "$@" <<'PY'
import os, sys
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
    except OSError:
        continue
    if all(a in cmd for a in sys.argv[1:]) and int(pid) not in (os.getpid(), os.getppid()):
        print(pid)
        break
PY
}

peak_rss() {  # $1 = pid: its peak resident set (VmHWM) in MiB, or "-"
  awk '/^VmHWM:/ {printf "%.0f\n", $2 / 1024; found=1} END {if (!found) print "-"}' \
    "/proc/$1/status" 2>/dev/null || echo "-"
}

settle_tessera() {  # $1 = FUSE daemon pid: fold the whole journal (the snapshot checkpoint)
  local mp
  mp=$(tr '\0' '\n' <"/proc/$1/cmdline" | grep -A1 -x -- --mountpoint | tail -1)
  python3 -c 'import os, sys; os.setxattr(sys.argv[1], "user.tessera.checkpoint", b"1")' \
    "$mp/volume"
}

settle_s3backer() {  # $1 = s3backer pid: wait (at most 120 s) until no block is dirty
  for _ in $(seq 1200); do
    awk '$1 == "block_cache_dirty_ratio" {exit ($2 + 0 > 0)}' "$S3B_DIR/stats" && break
    sleep 0.1
  done
}

fio_all() {  # $1 = directory on ext4, $2 = pid of the daemon behind it, $3 = its settle_*
  # one figure per run in TESTS, server CPU s and ms per I/O during the runs, ms per I/O
  # once settled (journal folded / dirty blocks uploaded), peak RSS MiB, load average
  local d=$1 pid=$2 settle=$3 out=() cpu0 skip=0
  cpu0=$(server_cpu)
  : >"$WORK/ios"
  local common=(--directory="$d" --size="$SIZE" --runtime="$RUNTIME" --time_based
                --ioengine=libaio --direct=1 --group_reporting --output-format=json)
  for spec in "write 1M 1" "read 1M 1" "randwrite 4k 16" "randread 4k 16"; do
    set -- $spec
    case " $TESTS " in *" $1 "*) ;; *) out+=("-"); continue ;; esac
    local j
    if [ "$1" = randwrite ] && [ "${FIO_OVERWRITE:-1}" = 1 ]; then
      # randwrite on a file written whole first: a fresh file's first write to each 1 MiB
      # block makes s3backer read that block from the gateway, one write at a time behind
      # its uploads, and how long that phase lasted decided its figure (its 3x swing);
      # written first, both targets start warm. The layout's CPU is left out.
      local c0; c0=$(server_cpu)
      fio --name=t --rw=write --bs=1M --size="$SIZE" --directory="$d" --ioengine=libaio \
        --direct=1 --end_fsync=1 --output=/dev/null
      skip=$(python3 -c 'import sys; print(float(sys.argv[1]) + float(sys.argv[3]) - float(sys.argv[2]))' \
        "$skip" "$c0" "$(server_cpu)")
    fi
    j=$(fio --name=t --rw="$1" --bs="$2" --iodepth="$3" --end_fsync=1 "${common[@]}")
    out+=("$(python3 -c '
import json, sys
j = json.loads(sys.stdin.read())["jobs"][0]
rw, bs = sys.argv[1], sys.argv[2]
side = j["write"] if "write" in rw else j["read"]
print("%.1f" % (side["bw_bytes"] / 1e6) if bs == "1M" else "%.0f" % side["iops"])
open(sys.argv[3], "a").write("%d\n" % side["total_ios"])
' "$1" "$2" "$WORK/ios" <<<"$j")")
    rm -f "$d"/t.*
  done
  local cpu1 load
  cpu1=$(python3 -c 'import sys; print(float(sys.argv[1]) - float(sys.argv[2]))' \
    "$(server_cpu)" "$skip"); load=$(cut -d' ' -f1 /proc/loadavg)
  "$settle" "$pid"  # what the writes still cost: folds, or uploads of dirty blocks
  out+=("$(python3 -c '
import sys
cpu0, cpu1, cpu2 = (float(x) for x in sys.argv[1:4])
ios = max(sum(int(x) for x in open(sys.argv[4]).read().split()), 1)
print("%.1f %.3f %.3f" % (cpu1 - cpu0, (cpu1 - cpu0) * 1000 / ios, (cpu2 - cpu0) * 1000 / ios))
' "$cpu0" "$cpu1" "$(python3 -c 'import sys; print(float(sys.argv[1]) - float(sys.argv[2]))' \
    "$(server_cpu)" "$skip")" "$WORK/ios")")
  out+=("$(peak_rss "$pid")" "$load")
  echo "${out[*]}"
}

tessera_run() {  # $@ = extra `volume mount` options; prints fio_all's figures
  local vol=fio-bench-$$-$((++VOLS))
  python -m ops.cli volume create "$vol" --size 4G >/dev/null
  python -m ops.cli volume mount --fs ext4 "$@" "$vol" "$WORK/vol" >/dev/null
  fio_all "$WORK/vol" "$(pid_of gateway.block.fuse "--volume $vol ")" settle_tessera
  python -m ops.cli volume unmount "$WORK/vol" >/dev/null
  python -m ops.cli volume delete "$vol" >/dev/null
}

# s3backer on our own S3 gateway, same block size (s3backer 1.5 addresses buckets as virtual
# hosts, and *.localhost resolves to 127.0.0.1 in curl). Its defaults: 1,000 cached blocks,
# 20 upload threads, dirty blocks written within 250 ms; a write returns once the block is in
# its memory cache, so its fsync is no barrier to the nodes (ours is).
s3backer_run() {  # $1 = round: a fresh bucket and mount; prints fio_all's figures + MiB PUT
  command -v s3backer >/dev/null || { echo "- - - - - - - - - -"; return; }
  local bucket=s3backer-fio-$1
  python3 - "$bucket" <<'EOF'
import os, sys, boto3
boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"]).create_bucket(Bucket=sys.argv[1])
EOF
  S3B_DIR="$WORK/s3b-$1"; S3B_MNT="$WORK/s3b-mnt-$1"
  mkdir -p "$S3B_DIR" "$S3B_MNT"
  if ! s3backer --accessId="$AWS_ACCESS_KEY_ID" --accessKey="$AWS_SECRET_ACCESS_KEY" \
      --baseURL="http://localhost:${AWS_ENDPOINT_URL##*:}/" --region="$AWS_DEFAULT_REGION" \
      --authVersion=aws4 --blockSize=1M --size=4G --quiet ${FIO_S3B_OPTS:-} "$bucket" "$S3B_DIR" \
      || [ ! -e "$S3B_DIR/file" ]; then
    echo "mount-failed - - - - - - - - -"; return
  fi
  S3B_LOOP=$(losetup --find --show "$S3B_DIR/file")
  mkfs.ext4 -q -F -E nodiscard,lazy_itable_init=1,lazy_journal_init=1 "$S3B_LOOP"
  mount "$S3B_LOOP" "$S3B_MNT"
  rm -f "$S3B_DIR/stats" 2>/dev/null || true  # resets s3backer's counters
  local f
  f=$(fio_all "$S3B_MNT" "$(pid_of s3backer "$S3B_DIR")" settle_s3backer)
  local puts
  [ -n "${FIO_S3B_STATS:-}" ] && sed "s/^/s3backer stats round $1: /" "$S3B_DIR/stats" >&2
  puts=$(awk '$1 == "http_puts" {print $2}' "$S3B_DIR/stats" 2>/dev/null || true)
  echo "$f $(python3 -c '
import sys
puts, ios = sys.argv[1], sum(int(x) for x in open(sys.argv[2]).read().split())
print("%.0f" % (int(puts) * 1000 / max(ios, 1)) if puts.isdigit() else "-")' "${puts:-}" "$WORK/ios")"
  umount "$S3B_MNT"; losetup -d "$S3B_LOOP"; S3B_LOOP=""
  fusermount3 -u "$S3B_DIR"
  for _ in $(seq 100); do [ -z "$(pid_of s3backer "$S3B_DIR")" ] && break; sleep 0.1; done
}

ROUNDS=${FIO_ROUNDS:-1}
MOUNT_OPTS=(${FIO_MOUNT_OPTS:-})
ALT_OPTS=(${FIO_ALT_OPTS:-})
VOLS=0
ROWS="$WORK/rows"; : >"$ROWS"
for r in $(seq "$ROUNDS"); do
  if [ $((r % 2)) -eq 1 ]; then order="t a n s"; else order="s n a t"; fi
  for x in $order; do
    case $x in
      t) row="tessera $(tessera_run "${MOUNT_OPTS[@]}")" ;;
      a) [ ${#ALT_OPTS[@]} -gt 0 ] || continue; row="tessera-alt $(tessera_run "${ALT_OPTS[@]}")" ;;
      n) [ -n "${FIO_NOJOURNAL:-}" ] || continue; row="no-journal $(tessera_run --no-journal)" ;;
      s) [ -z "${FIO_NO_S3BACKER:-}" ] || continue; row="s3backer $(s3backer_run "$r")" ;;
    esac
    echo "$row" >>"$ROWS"; echo "round $r: $row" >&2  # progress
  done
done

python3 - "$ROWS" "${FIO_MOUNT_OPTS:-}" "${FIO_ALT_OPTS:-}" <<'PY'
import statistics, sys
cols = ["seq1M-wr MB/s", "seq1M-rd MB/s", "rand4k-wr IOPS", "rand4k-rd IOPS", "server CPU s",
        "ms/IO", "ms/IO settled", "peak RSS MiB", "load", "PUT MiB/kIO"]
rows = [ln.split() for ln in open(sys.argv[1]) if ln.strip()]
print(f"{'target':<20}" + "".join(f"{c:>15}" for c in cols))
for r in rows:
    print(f"{r[0]:<20}" + "".join(f"{v:>15}" for v in r[1:]))
med = {}
for t in dict.fromkeys(r[0] for r in rows):
    got = [r[1:] for r in rows if r[0] == t]
    m = []
    for i in range(len(cols)):
        vals = [float(g[i]) for g in got if i < len(g) and g[i] not in ("-", "mount-failed")]
        m.append(statistics.median(vals) if vals else None)
    med[t] = m
    if len(got) > 1:
        print(f"{'median ' + t:<20}" + "".join(
            f"{'-' if v is None else f'{v:.4g}':>15}" for v in m))
for t, opts in (("tessera", sys.argv[2]), ("tessera-alt", sys.argv[3])):
    s, x = med.get("s3backer"), med.get(t)
    if s and x and s[2] and x[2]:
        print(f"rand4k-wr {t}{' (' + opts + ')' if opts else ''} / s3backer: "
              f"{x[2] / s[2]:.2f}x (medians of {sum(r[0] == t for r in rows)} runs)")
PY
