"""The AWS CLI (`aws s3` and `aws s3api`) against a real cluster: data and listings asserted."""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.cluster import LocalCluster

MIB = 1024 * 1024


@pytest.fixture
def aws(cluster: LocalCluster):
    env = cluster.cli_env()

    def run(*args: str, check: bool = True) -> str:
        cmd = [sys.executable, "-m", "awscli", "--endpoint-url", cluster.endpoint, *args]
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        if check and p.returncode != 0:
            raise AssertionError(f"{' '.join(args)} -> {p.returncode}\n{p.stdout}\n{p.stderr}")
        return p.stdout

    return run


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _ls_keys(out: str) -> list[str]:
    """Keys of `aws s3 ls --recursive` lines: date time size key."""
    return [line.split(None, 3)[3] for line in out.splitlines() if line.strip()]


def test_s3_cp_sync_ls_rm(aws, cluster: LocalCluster, tmp_path: Path) -> None:
    rnd = random.Random(31)
    b = "awscli-s3"
    assert "make_bucket: awscli-s3" in aws("s3", "mb", f"s3://{b}")
    # cp up and down: a small object and a 20 MiB one (multipart at the CLI's 8 MiB threshold).
    small = _write(tmp_path / "small.txt", b"hello from the aws cli\n")
    big = _write(tmp_path / "big.bin", rnd.randbytes(20 * MIB))
    aws("s3", "cp", "--no-progress", str(small), f"s3://{b}/docs/small.txt")
    aws("s3", "cp", "--no-progress", str(big), f"s3://{b}/big.bin")
    down = tmp_path / "down"
    out = aws("s3", "cp", "--no-progress", "--recursive", f"s3://{b}", str(down))
    assert len(out.splitlines()) == 2
    assert (down / "docs/small.txt").read_bytes() == small.read_bytes()
    assert hashlib.sha256((down / "big.bin").read_bytes()).digest() == \
        hashlib.sha256(big.read_bytes()).digest()
    head = cluster.client().head_object(Bucket=b, Key="big.bin")
    assert head["ContentLength"] == 20 * MIB and head["ETag"].endswith('-3"')

    # sync a tree; change one file; only it is uploaded the second time.
    tree = tmp_path / "tree"
    files = {f"a/f{i}.txt": f"file {i}\n".encode() for i in range(3)}
    files |= {f"a/b/g{i}.dat": rnd.randbytes(1000 + i) for i in range(3)}
    files["top.txt"] = b"top"
    for rel, data in files.items():
        _write(tree / rel, data)
    out = aws("s3", "sync", "--no-progress", str(tree), f"s3://{b}/tree")
    assert sorted(line.split(" to ")[1] for line in out.splitlines()) == \
        sorted(f"s3://{b}/tree/{rel}" for rel in files)
    assert aws("s3", "sync", "--no-progress", str(tree), f"s3://{b}/tree") == ""
    files["a/f1.txt"] = b"file 1, longer now\n"
    _write(tree / "a/f1.txt", files["a/f1.txt"])
    out = aws("s3", "sync", "--no-progress", str(tree), f"s3://{b}/tree")
    assert [line.split(" to ")[1] for line in out.splitlines()] == [f"s3://{b}/tree/a/f1.txt"]
    back = tmp_path / "back"
    aws("s3", "sync", "--no-progress", f"s3://{b}/tree", str(back))
    assert {str(p.relative_to(back)): p.read_bytes() for p in back.rglob("*") if p.is_file()} \
        == files

    # ls: recursive, and one level with common prefixes.
    expected = sorted(["big.bin", "docs/small.txt", *(f"tree/{rel}" for rel in files)])
    assert _ls_keys(aws("s3", "ls", "--recursive", f"s3://{b}")) == expected
    level = aws("s3", "ls", f"s3://{b}/tree/a/").splitlines()
    assert level[0].split() == ["PRE", "b/"]
    assert [line.split()[-1] for line in level[1:]] == ["f0.txt", "f1.txt", "f2.txt"]
    assert [line.split()[2] for line in level[1:]] == ["7", "19", "7"]
    top = aws("s3", "ls", f"s3://{b}").splitlines()
    assert [line.split()[-1] for line in top] == ["docs/", "tree/", "big.bin"]
    assert b in [line.split()[-1] for line in aws("s3", "ls").splitlines()]

    # rm --recursive removes the prefix only.
    out = aws("s3", "rm", "--recursive", f"s3://{b}/tree")
    assert len(out.splitlines()) == len(files)
    assert _ls_keys(aws("s3", "ls", "--recursive", f"s3://{b}")) == ["big.bin", "docs/small.txt"]
    aws("s3", "rm", "--recursive", f"s3://{b}")
    assert "Contents" not in cluster.client().list_objects_v2(Bucket=b)
    assert "remove_bucket: awscli-s3" in aws("s3", "rb", f"s3://{b}")


def test_s3api_versioning(aws, cluster: LocalCluster, tmp_path: Path) -> None:
    b = "awscli-versions"
    s3 = cluster.client()
    s3.create_bucket(Bucket=b)
    aws("s3api", "put-bucket-versioning", "--bucket", b,
        "--versioning-configuration", "Status=Enabled")
    assert s3.get_bucket_versioning(Bucket=b)["Status"] == "Enabled"
    first = _write(tmp_path / "v0", b"version 0")
    vids = [json.loads(aws("s3api", "put-object", "--bucket", b, "--key", "doc",
                           "--body", str(first)))["VersionId"]]
    vids += [s3.put_object(Bucket=b, Key="doc", Body=f"version {i}".encode())["VersionId"]
             for i in (1, 2)]
    listed = json.loads(aws("s3api", "list-object-versions", "--bucket", b))
    assert [v["VersionId"] for v in listed["Versions"]] == list(reversed(vids))
    assert [v["IsLatest"] for v in listed["Versions"]] == [True, False, False]
    assert [v["Size"] for v in listed["Versions"]] == [9, 9, 9]
    out = tmp_path / "got"
    meta = json.loads(aws("s3api", "get-object", "--bucket", b, "--key", "doc",
                          "--version-id", vids[0], str(out)))
    assert meta["VersionId"] == vids[0] and out.read_bytes() == b"version 0"
    marker = s3.delete_object(Bucket=b, Key="doc")["VersionId"]
    listed = json.loads(aws("s3api", "list-object-versions", "--bucket", b, "--prefix", "d"))
    assert [m["VersionId"] for m in listed["DeleteMarkers"]] == [marker]
    assert [v["VersionId"] for v in listed["Versions"]] == list(reversed(vids))


def test_s3api_multipart(aws, cluster: LocalCluster, tmp_path: Path) -> None:
    b = "awscli-multipart"
    rnd = random.Random(7)
    parts = [rnd.randbytes(5 * MIB), rnd.randbytes(12345)]
    aws("s3api", "create-bucket", "--bucket", b)
    up = json.loads(aws("s3api", "create-multipart-upload", "--bucket", b, "--key", "mp/obj",
                        "--content-type", "application/x-test"))
    uid = up["UploadId"]
    etags = []
    for n, data in enumerate(parts, 1):
        f = _write(tmp_path / f"part{n}", data)
        res = json.loads(aws("s3api", "upload-part", "--bucket", b, "--key", "mp/obj",
                             "--upload-id", uid, "--part-number", str(n), "--body", str(f)))
        assert res["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
        etags.append(res["ETag"])
    listed = cluster.client().list_parts(Bucket=b, Key="mp/obj", UploadId=uid)
    assert [p["PartNumber"] for p in listed["Parts"]] == [1, 2]
    spec = {"Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]}
    done = json.loads(aws("s3api", "complete-multipart-upload", "--bucket", b, "--key",
                          "mp/obj", "--upload-id", uid, "--multipart-upload", json.dumps(spec)))
    md5s = b"".join(hashlib.md5(p).digest() for p in parts)
    assert done["ETag"] == f'"{hashlib.md5(md5s).hexdigest()}-2"'
    out = tmp_path / "whole"
    meta = json.loads(aws("s3api", "get-object", "--bucket", b, "--key", "mp/obj", str(out)))
    assert meta["ContentType"] == "application/x-test"
    assert meta["ContentLength"] == sum(map(len, parts))
    assert out.read_bytes() == b"".join(parts)
    s3 = cluster.client()
    ranged = s3.get_object(Bucket=b, Key="mp/obj", Range=f"bytes={5 * MIB - 10}-{5 * MIB + 9}")
    assert ranged["Body"].read() == parts[0][-10:] + parts[1][:10]


def test_s3_presign_sigv2_url_with_curl(aws, cluster: LocalCluster, tmp_path: Path) -> None:
    """`aws s3 presign` (awscli 1 signs SigV2 query URLs by default) fetched with curl."""
    b = "awscli-presign"
    aws("s3", "mb", f"s3://{b}")
    aws("s3", "cp", str(_write(tmp_path / "p.txt", b"presigned by the cli\n")), f"s3://{b}/p.txt")
    url = aws("s3", "presign", f"s3://{b}/p.txt", "--expires-in", "120").strip()
    assert "Signature=" in url or "X-Amz-Signature=" in url
    out = subprocess.run(["curl", "-sS", "-f", url], capture_output=True, timeout=60)
    assert out.returncode == 0 and out.stdout == b"presigned by the cli\n", out.stderr
    bad = url.replace("p.txt", "q.txt")
    out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", bad],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout == "403"
