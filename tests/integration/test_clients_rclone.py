"""rclone's S3 backend against a real cluster: copy, sync, check, lsf, delete."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.cluster import LocalCluster

MIB = 1024 * 1024
BUCKET = "rclone-flow"

pytestmark = pytest.mark.skipif(shutil.which("rclone") is None, reason="rclone not installed")


@pytest.fixture
def rclone(cluster: LocalCluster, tmp_path: Path):
    """Run rclone with a remote `T:` configured only through the environment."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "RCLONE_"))}
    conf = tmp_path / "rclone.conf"
    conf.write_text("")
    env.update(
        RCLONE_CONFIG=str(conf),
        RCLONE_CONFIG_T_TYPE="s3",
        RCLONE_CONFIG_T_PROVIDER="Other",
        RCLONE_CONFIG_T_ENDPOINT=cluster.endpoint,
        RCLONE_CONFIG_T_ACCESS_KEY_ID=cluster.env["AWS_ACCESS_KEY_ID"],
        RCLONE_CONFIG_T_SECRET_ACCESS_KEY=cluster.env["AWS_SECRET_ACCESS_KEY"],
        RCLONE_CONFIG_T_REGION=cluster.env["AWS_DEFAULT_REGION"],
        RCLONE_CONFIG_T_FORCE_PATH_STYLE="true",
        # Multipart above 5 MiB, in 5 MiB parts: the 12 MiB file below has three parts.
        RCLONE_S3_UPLOAD_CUTOFF="5M",
        RCLONE_S3_CHUNK_SIZE="5M",
        RCLONE_LOW_LEVEL_RETRIES="1",
        RCLONE_RETRIES="1",
    )

    def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(["rclone", *args], env=env, capture_output=True, text=True,
                           timeout=120)
        if ok and p.returncode != 0:
            raise AssertionError(f"rclone {' '.join(args)} -> {p.returncode}\n{p.stderr}")
        return p

    # rclone retries a 5xx whatever RCLONE_*RETRIES say (1.60: aws-sdk-go's MaxRetries is
    # --low-level-retries, which counts retries, and its pacer retries 500/503 once more):
    # the gateway's own count shows a failure rclone hid.
    errors = cluster.server_errors()
    yield run
    assert cluster.server_errors() == errors, "the gateway answered 5xx (rclone retried)"


def _tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def _lsf(rclone, remote: str) -> list[str]:
    out = rclone("lsf", "-R", "--files-only", remote).stdout
    return sorted(out.splitlines())


def test_rclone_copy_sync_check_delete(rclone, cluster: LocalCluster, tmp_path: Path) -> None:
    rnd = random.Random(5)
    src = tmp_path / "src"
    files = {
        "big/blob.bin": rnd.randbytes(12 * MIB),
        "docs/readme.txt": b"read me\n",
        "docs/notes/a.txt": b"a" * 1000,
        "docs/notes/b.txt": rnd.randbytes(4096),
        "empty.txt": b"",
        "space name/\u00e9t\u00e9 +plus.txt": b"unicode and spaces",
    }
    _tree(src, files)
    rclone("mkdir", f"T:{BUCKET}")
    rclone("copy", str(src), f"T:{BUCKET}/data")
    assert _lsf(rclone, f"T:{BUCKET}/data") == sorted(files)

    check = rclone("check", str(src), f"T:{BUCKET}/data")
    assert "0 differences found" in check.stderr
    assert f"{len(files)} matching files" in check.stderr
    check = rclone("check", "--download", str(src), f"T:{BUCKET}/data")
    assert "0 differences found" in check.stderr

    s3 = cluster.client()
    big = s3.head_object(Bucket=BUCKET, Key="data/big/blob.bin")
    assert big["ETag"].endswith('-3"'), big["ETag"]  # really went through multipart
    got = s3.get_object(Bucket=BUCKET, Key="data/big/blob.bin")["Body"].read()
    assert hashlib.sha256(got).digest() == hashlib.sha256(files["big/blob.bin"]).digest()
    assert "mtime" in big["Metadata"]  # rclone keeps the modification time as metadata

    # Change the source: one file edited, one removed, one added; sync mirrors it.
    files["docs/readme.txt"] = b"read me again, edited\n"
    del files["docs/notes/a.txt"]
    (src / "docs/notes/a.txt").unlink()
    files["new/file.txt"] = b"new"
    _tree(src, {k: files[k] for k in ("docs/readme.txt", "new/file.txt")})
    diff = rclone("check", str(src), f"T:{BUCKET}/data", ok=False)
    assert diff.returncode != 0 and "3 differences found" in diff.stderr
    rclone("sync", str(src), f"T:{BUCKET}/data")
    assert _lsf(rclone, f"T:{BUCKET}/data") == sorted(files)
    assert "0 differences found" in rclone("check", str(src), f"T:{BUCKET}/data").stderr
    assert rclone("cat", f"T:{BUCKET}/data/docs/readme.txt").stdout == "read me again, edited\n"

    # Download the whole tree back and compare byte for byte.
    back = tmp_path / "back"
    rclone("copy", f"T:{BUCKET}/data", str(back))
    assert {str(p.relative_to(back)): p.read_bytes()
            for p in back.rglob("*") if p.is_file()} == files

    # lsf one level shows directories from common prefixes.
    level = sorted(rclone("lsf", f"T:{BUCKET}/data").stdout.splitlines())
    assert level == ["big/", "docs/", "empty.txt", "new/", "space name/"]

    # delete removes files under a path only; purge removes the rest.
    rclone("delete", f"T:{BUCKET}/data/docs")
    assert _lsf(rclone, f"T:{BUCKET}/data") == sorted(k for k in files if not k.startswith("docs/"))
    rclone("purge", f"T:{BUCKET}")
    assert BUCKET not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_rclone_presigned_single_part_uploads(rclone, cluster: LocalCluster,
                                              tmp_path: Path) -> None:
    """rclone before 1.59 (Debian 11's and Ubuntu 22.04's 1.53) uploads every single-part
    object with a presigned PUT whose signed headers repeat Content-Length beside Go's own
    (`content-length: N` and `Content-Length: N`); AWS takes it. `--s3-use-presigned-request`
    makes today's rclone do the same."""
    src = tmp_path / "src"
    files = {"a.txt": b"presigned", "empty": b"", "dir/\u00fc +b.bin": os.urandom(100_000)}
    _tree(src, files)
    bucket = "rclone-presigned"
    rclone("mkdir", f"T:{bucket}")
    rclone("copy", "--s3-use-presigned-request", str(src), f"T:{bucket}")
    s3 = cluster.client()
    for key, data in files.items():
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == data, key
    assert "0 differences found" in rclone("check", "--download", str(src), f"T:{bucket}").stderr
    rclone("purge", f"T:{bucket}")
