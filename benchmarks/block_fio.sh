#!/usr/bin/env bash
# fio on ext4 over a Tessera volume (FUSE + loop), side by side with s3backer (Debian) mounted
# on our own S3 gateway with the same 1 MiB block size. Needs root, fuse3, fio, s3backer.
#
#   benchmarks/block_fio.sh [DATA_DIR]     (starts `tessera up` unless TESSERA_CONFIG is set)
#
# Prints one table: seq 1M write/read MB/s, rand 4k write/read IOPS at iodepth 16, and the
# server CPU seconds (nodes, gateway, FUSE daemon or s3backer) spent in each target's runs,
# and that CPU per I/O fio completed (ms).
# FIO_NOJOURNAL=1 adds a row for `volume mount --no-journal` (whole-extent cache).
# FIO_TESTS picks runs (default "write read randwrite randread"); FIO_PORT the gateway port
# (admin +1; FIO_NODE_PORT the first node's, default +2).
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
  pkill -f -- "s3backer-fio $S3B_DIR" 2>/dev/null  # a daemon that outlived its mount
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

fio_all() {  # $1 = directory on ext4; one figure per run in TESTS, server CPU s, ms per I/O
  local d=$1 out=() cpu0
  cpu0=$(server_cpu)
  : >"$WORK/ios"
  local common=(--directory="$d" --size="$SIZE" --runtime="$RUNTIME" --time_based
                --ioengine=libaio --direct=1 --group_reporting --output-format=json)
  for spec in "write 1M 1" "read 1M 1" "randwrite 4k 16" "randread 4k 16"; do
    set -- $spec
    case " $TESTS " in *" $1 "*) ;; *) out+=("-"); continue ;; esac
    local j
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
  out+=("$(python3 -c '
import sys
cpu = float(sys.argv[2]) - float(sys.argv[1])
ios = sum(int(x) for x in open(sys.argv[3]).read().split())
print("%.1f %.3f" % (cpu, cpu * 1000 / max(ios, 1)))' "$cpu0" "$(server_cpu)" "$WORK/ios")")
  echo "${out[*]}"
}

tessera_run() {  # $@ = extra `volume mount` options; prints fio_all's figures
  local vol=fio-bench-$$
  python -m ops.cli volume create "$vol" --size 4G >/dev/null
  python -m ops.cli volume mount --fs ext4 "$@" "$vol" "$WORK/vol" >/dev/null
  fio_all "$WORK/vol"
  python -m ops.cli volume unmount "$WORK/vol" >/dev/null
  python -m ops.cli volume delete "$vol" >/dev/null
}

# Tessera volume (journal), and with FIO_NOJOURNAL=1 the whole-extent cache alongside
T=$(tessera_run)
N=""
[ -n "${FIO_NOJOURNAL:-}" ] && N=$(tessera_run --no-journal)

# s3backer on our own S3 gateway, same block size (s3backer 1.5 addresses buckets as virtual
# hosts, and *.localhost resolves to 127.0.0.1 in curl)
S="-"
if command -v s3backer >/dev/null; then
  python3 - <<'EOF'
import os, boto3
c = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
if "s3backer-fio" not in [b["Name"] for b in c.list_buckets()["Buckets"]]:
    c.create_bucket(Bucket="s3backer-fio")
EOF
  mkdir -p "$S3B_DIR" "$S3B_MNT"
  if s3backer --accessId="$AWS_ACCESS_KEY_ID" --accessKey="$AWS_SECRET_ACCESS_KEY" \
      --baseURL="http://localhost:${AWS_ENDPOINT_URL##*:}/" --region="$AWS_DEFAULT_REGION" \
      --authVersion=aws4 --blockSize=1M --size=4G --quiet s3backer-fio "$S3B_DIR" \
      && [ -e "$S3B_DIR/file" ]; then
    S3B_LOOP=$(losetup --find --show "$S3B_DIR/file")
    mkfs.ext4 -q -F -E nodiscard,lazy_itable_init=1,lazy_journal_init=1 "$S3B_LOOP"
    mount "$S3B_LOOP" "$S3B_MNT"
    S=$(fio_all "$S3B_MNT")
  else
    S="mount-failed - - - - -"
  fi
fi

printf '%-10s %14s %14s %16s %16s %14s %10s\n' "target" "seq1M-wr MB/s" "seq1M-rd MB/s" \
  "rand4k-wr IOPS" "rand4k-rd IOPS" "server CPU s" "ms/IO"
printf '%-10s %14s %14s %16s %16s %14s %10s\n' tessera $T
[ -n "$N" ] && printf '%-10s %14s %14s %16s %16s %14s %10s\n' no-journal $N
printf '%-10s %14s %14s %16s %16s %14s %10s\n' s3backer $S
