"""boto3 and the AWS CLI with the integrity defaults SDKs took in 2025 (checksums calculated
when supported, response checksums validated): each algorithm on PutObject and GetObject,
s3transfer's multipart uploads with COMPOSITE and FULL_OBJECT checksums, conditional writes,
and `aws s3 cp/sync/mv --checksum-algorithm` (awscli v1; Debian's aws v2 through s3api)."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from tests.integration.cluster import LocalCluster, fetch

MIB = 1024 * 1024
ALGORITHMS = ("CRC32", "CRC32C", "SHA1", "SHA256", "CRC64NVME")
PARTS = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB,
                       max_concurrency=3, num_download_attempts=1)  # a cut body fails


def _digest(alg: str, data: bytes) -> str:
    """The base64 checksum `alg` of `data`, computed here (not by the gateway)."""
    if alg == "CRC32":
        raw = zlib.crc32(data).to_bytes(4, "big")
    elif alg == "CRC32C":
        import crc32c

        raw = crc32c.crc32c(data).to_bytes(4, "big")
    elif alg == "CRC64NVME":
        from awscrt import checksums

        raw = checksums.crc64nvme(data).to_bytes(8, "big")
    else:
        raw = hashlib.new(alg.lower(), data).digest()
    return base64.b64encode(raw).decode()


def _code(exc: pytest.ExceptionInfo[ClientError]) -> tuple[int, str]:
    err = exc.value.response
    return err["ResponseMetadata"]["HTTPStatusCode"], err["Error"]["Code"]


@pytest.fixture(scope="module")
def s3(cluster: LocalCluster):
    """boto3 with its own defaults (when_supported both ways), as an application gets it."""
    client = cluster.client()
    assert client.meta.config.request_checksum_calculation == "when_supported"
    assert client.meta.config.response_checksum_validation == "when_supported"
    return client


def test_put_and_get_with_each_algorithm(s3) -> None:
    b = "dflt-checksums"
    s3.create_bucket(Bucket=b)
    data = random.Random(1).randbytes(200_001)
    put = s3.put_object(Bucket=b, Key="default", Body=data)
    assert put["ChecksumCRC32"] == _digest("CRC32", data)
    assert put["ChecksumType"] == "FULL_OBJECT"
    for alg in ALGORITHMS:
        put = s3.put_object(Bucket=b, Key=alg, Body=data, ChecksumAlgorithm=alg)
        assert put[f"Checksum{alg}"] == _digest(alg, data), alg
        assert put["ChecksumType"] == "FULL_OBJECT", alg
        got = s3.get_object(Bucket=b, Key=alg)  # x-amz-checksum-mode sent and checked
        assert got[f"Checksum{alg}"] == _digest(alg, data), alg
        assert got["ChecksumType"] == "FULL_OBJECT", alg
        assert got["Body"].read() == data
        listed = s3.list_objects_v2(Bucket=b, Prefix=alg)["Contents"][0]
        assert (listed["ChecksumAlgorithm"], listed["ChecksumType"]) == ([alg], "FULL_OBJECT")
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=b, Key="bad", Body=data, ChecksumSHA1=_digest("SHA1", b"x"))
    assert _code(exc) == (400, "BadDigest")


def test_clients_sending_no_checksum_get_and_validate_crc64nvme(cluster: LocalCluster) -> None:
    """Clients that send no checksum (boto3 on when_required, a presigned PUT) get S3's default
    CRC64NVME (test_default_checksum.py has the model) on the direct body path past 4 MiB too,
    and botocore validates the GET against it. A checksum given is stored alone."""
    s3 = cluster.client(request_checksum_calculation="when_required", signature_version="s3v4")
    b = "dflt-none"
    s3.create_bucket(Bucket=b)
    small = random.Random(4).randbytes(100_000)
    large = random.Random(5).randbytes(5 * MIB + 1)  # past 4 MiB: the pooled-block body path
    for key, data in (("small", small), ("large", large)):
        put = s3.put_object(Bucket=b, Key=key, Body=data)
        want = _digest("CRC64NVME", data)
        assert (put["ChecksumCRC64NVME"], put["ChecksumType"]) == (want, "FULL_OBJECT"), key
        url = s3.generate_presigned_url("put_object", Params={"Bucket": b, "Key": f"p-{key}"})
        assert fetch(url, "PUT", data)[0] == 200
        for k in (key, f"p-{key}"):
            got = s3.get_object(Bucket=b, Key=k, ChecksumMode="ENABLED")
            assert (got["ChecksumCRC64NVME"], got["ChecksumType"]) == (want, "FULL_OBJECT"), k
            assert got["Body"].read() == data  # botocore checked the CRC64NVME on the way
    s3.put_object(Bucket=b, Key="sha", Body=small, ChecksumSHA256=_digest("SHA256", small))
    head = s3.head_object(Bucket=b, Key="sha", ChecksumMode="ENABLED")
    assert "ChecksumCRC64NVME" not in head and head["ChecksumSHA256"] == _digest("SHA256", small)


def test_upload_file_composite_and_full_object(s3, tmp_path: Path) -> None:
    """s3transfer: the default CRC32 per part (COMPOSITE), CRC64NVME (FULL_OBJECT), and a
    FULL_OBJECT CRC32 with the whole file's value given for the completion to check."""
    b = "dflt-transfer"
    s3.create_bucket(Bucket=b)
    data = random.Random(2).randbytes(12 * MIB + 3)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    cases = {
        "default": ({}, "CRC32", "COMPOSITE"),
        "crc64": ({"ChecksumAlgorithm": "CRC64NVME"}, "CRC64NVME", "FULL_OBJECT"),
        "full32": ({"ChecksumType": "FULL_OBJECT", "ChecksumCRC32": _digest("CRC32", data)},
                   "CRC32", "FULL_OBJECT"),
    }
    for key, (extra, alg, ctype) in cases.items():
        s3.upload_file(str(src), b, key, ExtraArgs=extra, Config=PARTS)
        head = s3.head_object(Bucket=b, Key=key, ChecksumMode="ENABLED")
        assert head["ETag"].endswith('-3"') and head["ChecksumType"] == ctype, key
        if ctype == "FULL_OBJECT":
            assert head[f"Checksum{alg}"] == _digest(alg, data), key
        else:
            assert head[f"Checksum{alg}"].endswith("-3"), key
        dst = tmp_path / f"{key}.down"
        s3.download_file(b, key, str(dst), Config=PARTS)
        assert dst.read_bytes() == data
    with pytest.raises(S3UploadFailedError, match=r"\(BadDigest\) when calling the "
                       "CompleteMultipartUpload"):  # a whole-file value not the file's
        s3.upload_file(str(src), b, "wrong", Config=PARTS, ExtraArgs={
            "ChecksumType": "FULL_OBJECT", "ChecksumCRC32": _digest("CRC32", b"other")})
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=b)  # s3transfer aborted it


def test_conditional_writes(s3) -> None:
    b = "dflt-conditional"
    s3.create_bucket(Bucket=b)
    first = s3.put_object(Bucket=b, Key="k", Body=b"one", IfNoneMatch="*")
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=b, Key="k", Body=b"two", IfNoneMatch="*")
    assert _code(exc) == (412, "PreconditionFailed")
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=b, Key="k", Body=b"two", IfMatch='"' + "0" * 32 + '"')
    assert _code(exc) == (412, "PreconditionFailed")
    s3.put_object(Bucket=b, Key="k", Body=b"two", IfMatch=first["ETag"])
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=b, Key="none", Body=b"x", IfMatch=first["ETag"])
    assert _code(exc) == (404, "NoSuchKey")
    assert s3.get_object(Bucket=b, Key="k")["Body"].read() == b"two"


def _cli(cmd: list[str], cluster: LocalCluster, *args: str) -> str:
    p = subprocess.run([*cmd, "--endpoint-url", cluster.endpoint, *args], env=cluster.cli_env(),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"{' '.join(args)} -> {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p.stdout


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_awscli_v1_s3_commands_with_each_checksum(alg: str, s3, cluster: LocalCluster,
                                                  tmp_path: Path) -> None:
    """awscli v1 (the pinned Python one): cp up (one part and multipart), sync, mv and cp
    down with --checksum-mode ENABLED; each stored object carries the algorithm's value."""
    aws = [sys.executable, "-m", "awscli"]
    b = f"cli-sum-{alg.lower()}"
    s3.create_bucket(Bucket=b)
    rnd = random.Random(alg)
    files = {"small.txt": b"small\n", "big.bin": rnd.randbytes(9 * MIB),
             "tree/a.txt": b"a" * 1000, "tree/b/c.txt": b"c"}
    for rel, data in files.items():
        (tmp_path / "up" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "up" / rel).write_bytes(data)
    up = tmp_path / "up"
    sums = ["--checksum-algorithm", alg]
    _cli(aws, cluster, "s3", "cp", "--no-progress", *sums, str(up / "small.txt"), f"s3://{b}/")
    _cli(aws, cluster, "s3", "cp", "--no-progress", *sums, str(up / "big.bin"), f"s3://{b}/")
    _cli(aws, cluster, "s3", "sync", "--no-progress", *sums, str(up / "tree"), f"s3://{b}/tree")
    _cli(aws, cluster, "s3", "mv", "--no-progress", *sums, f"s3://{b}/small.txt",
         f"s3://{b}/moved.txt")
    for key, data in (("moved.txt", files["small.txt"]), ("tree/a.txt", files["tree/a.txt"])):
        head = s3.head_object(Bucket=b, Key=key, ChecksumMode="ENABLED")
        assert head[f"Checksum{alg}"] == _digest(alg, data), key
    big = s3.head_object(Bucket=b, Key="big.bin", ChecksumMode="ENABLED")
    assert big["ETag"].endswith('-2"') and f"Checksum{alg}" in big
    assert big["ChecksumType"] == ("FULL_OBJECT" if alg == "CRC64NVME" else "COMPOSITE")
    down = tmp_path / "down"
    _cli(aws, cluster, "s3", "cp", "--no-progress", "--recursive", "--checksum-mode",
         "ENABLED", f"s3://{b}", str(down))
    got = {str(p.relative_to(down)): p.read_bytes() for p in down.rglob("*") if p.is_file()}
    assert got == {"moved.txt": files["small.txt"], "big.bin": files["big.bin"],
                   "tree/a.txt": files["tree/a.txt"], "tree/b/c.txt": files["tree/b/c.txt"]}


def test_awscli_v2_debian(s3, cluster: LocalCluster, tmp_path: Path) -> None:
    """Debian's aws v2 (2.9, older than `s3 cp --checksum-algorithm` and CRC64NVME): s3api
    put-object and get-object with each algorithm it knows, and s3 cp/mv/sync."""
    aws = ["/usr/bin/aws"]
    if not Path(aws[0]).exists():
        pytest.fail("Debian's awscli v2 is not installed (apt-get install awscli)",
                    pytrace=False)
    b = "cli2-sums"
    s3.create_bucket(Bucket=b)
    data = random.Random(3).randbytes(70_000)
    (tmp_path / "f").write_bytes(data)
    for alg in ALGORITHMS[:4]:
        out = json.loads(_cli(aws, cluster, "s3api", "put-object", "--bucket", b, "--key", alg,
                              "--body", str(tmp_path / "f"), "--checksum-algorithm", alg))
        assert out[f"Checksum{alg}"] == _digest(alg, data)
        got = json.loads(_cli(aws, cluster, "s3api", "get-object", "--bucket", b, "--key", alg,
                              "--checksum-mode", "ENABLED", str(tmp_path / "g")))
        assert got[f"Checksum{alg}"] == _digest(alg, data)
        assert (tmp_path / "g").read_bytes() == data
    _cli(aws, cluster, "s3", "cp", "--no-progress", str(tmp_path / "f"), f"s3://{b}/c")
    _cli(aws, cluster, "s3", "mv", "--no-progress", f"s3://{b}/c", f"s3://{b}/m")
    _cli(aws, cluster, "s3", "sync", "--no-progress", f"s3://{b}", str(tmp_path / "s"))
    assert (tmp_path / "s" / "m").read_bytes() == data
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket=b)["Contents"]) == \
        sorted([*ALGORITHMS[:4], "m"])
