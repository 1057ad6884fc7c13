"""s3cmd against a real cluster: mb, put, get, ls, la, info, sync, del, rb."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.cluster import LocalCluster

MIB = 1024 * 1024
BUCKET = "s3cmd-flow"

pytestmark = pytest.mark.skipif(shutil.which("s3cmd") is None, reason="s3cmd not installed")


@pytest.fixture
def s3cmd(cluster: LocalCluster, tmp_path: Path):
    """Run s3cmd with a config file of its own (SigV4, plain HTTP, path style)."""
    host = cluster.endpoint.removeprefix("http://")
    cfg = tmp_path / "s3cfg"
    cfg.write_text(
        "[default]\n"
        f"access_key = {cluster.env['AWS_ACCESS_KEY_ID']}\n"
        f"secret_key = {cluster.env['AWS_SECRET_ACCESS_KEY']}\n"
        f"host_base = {host}\n"
        f"host_bucket = {host}\n"
        f"bucket_location = {cluster.env['AWS_DEFAULT_REGION']}\n"
        "use_https = False\n"
        "signature_v2 = False\n"
        "multipart_chunk_size_mb = 5\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}

    def run(*args: str) -> str:
        p = subprocess.run(["s3cmd", "-c", str(cfg), *args], env=env, capture_output=True,
                           text=True, timeout=120)
        # s3cmd 2.x retries a failed request up to 5 times whatever its config says (its
        # `max_retries` key is not read): a retry it warns of is a failure it hid.
        if p.returncode != 0 or "Retrying" in p.stderr or "failed:" in p.stderr:
            raise AssertionError(f"s3cmd {' '.join(args)} -> {p.returncode}\n"
                                 f"{p.stdout}\n{p.stderr}")
        return p.stdout

    return run


def _urls(out: str) -> list[str]:
    """The s3:// column of `ls`/`la` output."""
    return [line.split()[-1] for line in out.splitlines() if "s3://" in line]


def test_s3cmd_workflow(s3cmd, cluster: LocalCluster, tmp_path: Path) -> None:
    rnd = random.Random(11)
    big = tmp_path / "big.bin"
    big.write_bytes(rnd.randbytes(12 * MIB))
    small = tmp_path / "small.txt"
    small.write_bytes(b"s3cmd says hi\n")
    assert f"Bucket 's3://{BUCKET}/' created" in s3cmd("mb", f"s3://{BUCKET}")
    assert f"s3://{BUCKET}" in _urls(s3cmd("ls"))

    s3cmd("put", str(small), f"s3://{BUCKET}/dir/small.txt")
    s3cmd("put", str(big), f"s3://{BUCKET}/big.bin")  # multipart, 5 MiB chunks
    s3 = cluster.client()
    assert s3.head_object(Bucket=BUCKET, Key="big.bin")["ETag"].endswith('-3"')
    s3cmd("get", f"s3://{BUCKET}/big.bin", str(tmp_path / "big.back"))
    s3cmd("get", f"s3://{BUCKET}/dir/small.txt", str(tmp_path / "small.back"))
    assert (tmp_path / "big.back").read_bytes() == big.read_bytes()
    assert (tmp_path / "small.back").read_bytes() == small.read_bytes()

    info = s3cmd("info", f"s3://{BUCKET}/dir/small.txt")
    assert "File size: 14" in info and "MD5 sum:   " in info

    top = s3cmd("ls", f"s3://{BUCKET}")
    assert _urls(top) == [f"s3://{BUCKET}/dir/", f"s3://{BUCKET}/big.bin"]
    assert "DIR" in top.splitlines()[0]
    assert _urls(s3cmd("ls", "-r", f"s3://{BUCKET}")) == \
        [f"s3://{BUCKET}/big.bin", f"s3://{BUCKET}/dir/small.txt"]
    everything = _urls(s3cmd("la", "-r"))
    assert {f"s3://{BUCKET}/big.bin", f"s3://{BUCKET}/dir/small.txt"} <= set(everything)

    # sync a tree; unchanged files are skipped; an edit is uploaded; --delete-removed.
    tree = tmp_path / "tree"
    files = {f"d{i}/f{j}.txt": f"{i}-{j}\n".encode() for i in range(2) for j in range(3)}
    for rel, data in files.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_bytes(data)
    out = s3cmd("sync", f"{tree}/", f"s3://{BUCKET}/tree/")
    assert out.count("upload:") == len(files)
    assert "upload:" not in s3cmd("sync", f"{tree}/", f"s3://{BUCKET}/tree/")
    (tree / "d0/f1.txt").write_bytes(b"edited\n")
    (tree / "d1/f2.txt").unlink()
    out = s3cmd("sync", "--delete-removed", f"{tree}/", f"s3://{BUCKET}/tree/")
    assert out.count("upload:") == 1 and "d0/f1.txt" in out
    assert f"delete: 's3://{BUCKET}/tree/d1/f2.txt'" in out
    keys = [u.removeprefix(f"s3://{BUCKET}/tree/")
            for u in _urls(s3cmd("ls", "-r", f"s3://{BUCKET}/tree/"))]
    assert keys == sorted(k for k in files if k != "d1/f2.txt")
    back = tmp_path / "back"
    back.mkdir()
    s3cmd("sync", f"s3://{BUCKET}/tree/", f"{back}/")
    assert (back / "d0/f1.txt").read_bytes() == b"edited\n"
    assert (back / "d1/f0.txt").read_bytes() == b"1-0\n"

    # del, recursive del, rb.
    assert f"delete: 's3://{BUCKET}/big.bin'" in s3cmd("del", f"s3://{BUCKET}/big.bin")
    s3cmd("del", "--recursive", "--force", f"s3://{BUCKET}/")
    assert _urls(s3cmd("ls", "-r", f"s3://{BUCKET}")) == []
    assert f"Bucket 's3://{BUCKET}/' removed" in s3cmd("rb", f"s3://{BUCKET}")
