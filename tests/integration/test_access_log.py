"""Server access logging through boto3: Put/GetBucketLogging, its refusals, and log objects
delivered into the target bucket in AWS's format, for every request (denied ones too)."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from unittest.mock import ANY

import boto3
import pytest
from botocore import UNSIGNED
from botocore.exceptions import ClientError

from ops.botoconfig import no_retries
from tests.integration.cluster import LocalCluster, wait_for

FLUSH_S = "1"
SIMPLE_KEY = re.compile(r"^(?P<prefix>.*?)(\d{4})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-"
                        r"[0-9A-F]{16}$")


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A cluster whose access logs are delivered a second after they are staged."""
    old = os.environ.get("TESSERA_ACCESS_LOG_FLUSH_S")
    os.environ["TESSERA_ACCESS_LOG_FLUSH_S"] = FLUSH_S
    try:
        c = LocalCluster(tmp_path_factory.mktemp("accesslog")).start()
    finally:
        if old is None:
            os.environ.pop("TESSERA_ACCESS_LOG_FLUSH_S", None)
        else:
            os.environ["TESSERA_ACCESS_LOG_FLUSH_S"] = old
    yield c
    c.stop()


@pytest.fixture(scope="module")
def s3(logged: LocalCluster) -> Any:
    return logged.client()


@pytest.fixture(scope="module")
def other(logged: LocalCluster) -> Any:
    """A client of a second tenant."""
    return logged.tenant_client(f"alt-{uuid.uuid4().hex[:6]}")


def _bucket(s3: Any, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name)
    return name


def _err(call: Callable[..., Any], **kw: Any) -> tuple[int, str, dict[str, Any]]:
    with pytest.raises(ClientError) as e:
        call(**kw)
    r = e.value.response
    return r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Code"], r



def _log_lines(s3: Any, bucket: str, prefix: str = "") -> dict[str, str]:
    """Every delivered log line under `prefix`, by object key and line."""
    out: dict[str, str] = {}
    for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
        body = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read().decode()
        for line in body.splitlines():
            out[line] = o["Key"]
    return out


def _parse(line: str) -> list[str]:
    """The 26 fields of a line, as the conformance suite splits them."""
    fields = shlex.split(line.replace("[", '"').replace("]", '"'))
    assert len(fields) == 26, line
    return fields


def _records_for(s3: Any, bucket: str, prefix: str, request_ids: list[str],
                 ) -> dict[str, tuple[list[str], str]]:
    """Wait until a line for every request id is delivered: id -> (fields, object key)."""
    def found() -> dict[str, tuple[list[str], str]] | None:
        by_id = {}
        for line, key in _log_lines(s3, bucket, prefix).items():
            f = _parse(line)
            by_id[f[5]] = (f, key)
        return by_id if all(r in by_id for r in request_ids) else None
    return wait_for(found, f"log records {request_ids}")


def test_get_put_bucket_logging_round_trip(s3: Any, logged: LocalCluster) -> None:
    src, dst = _bucket(s3, "rt-src"), _bucket(s3, "rt-dst")
    got = s3.get_bucket_logging(Bucket=src)
    assert "LoggingEnabled" not in got
    owner = s3.get_bucket_acl(Bucket=src)["Owner"]
    enabled = {"TargetBucket": dst, "TargetPrefix": "logs/",
               "TargetGrants": [{"Grantee": {"Type": "CanonicalUser", "ID": owner["ID"],
                                             "DisplayName": owner["DisplayName"]},
                                 "Permission": "READ"}],
               "TargetObjectKeyFormat": {"SimplePrefix": {}}}
    s3.put_bucket_logging(Bucket=src, BucketLoggingStatus={"LoggingEnabled": enabled})
    assert s3.get_bucket_logging(Bucket=src)["LoggingEnabled"] == enabled
    part = {"TargetBucket": dst, "TargetPrefix": "p/", "TargetObjectKeyFormat": {
        "PartitionedPrefix": {"PartitionDateSource": "DeliveryTime"}}}
    s3.put_bucket_logging(Bucket=src, BucketLoggingStatus={"LoggingEnabled": part})
    assert s3.get_bucket_logging(Bucket=src)["LoggingEnabled"] == part
    minimal = {"TargetBucket": dst, "TargetPrefix": ""}
    s3.put_bucket_logging(Bucket=src, BucketLoggingStatus={"LoggingEnabled": minimal})
    assert s3.get_bucket_logging(Bucket=src)["LoggingEnabled"] == minimal
    s3.put_bucket_logging(Bucket=src, BucketLoggingStatus={})
    assert "LoggingEnabled" not in s3.get_bucket_logging(Bucket=src)


def test_put_bucket_logging_refusals(s3: Any, other: Any) -> None:
    src, dst = _bucket(s3, "err-src"), _bucket(s3, "err-dst")

    def put(bucket: str = src, client: Any = s3, **enabled: Any) -> tuple[int, str, Any]:
        conf = {"TargetBucket": dst, "TargetPrefix": "log/", **enabled}
        return _err(client.put_bucket_logging, Bucket=bucket,
                    BucketLoggingStatus={"LoggingEnabled": conf})

    status, code, r = put(TargetBucket=dst + "-missing")
    assert (status, code) == (400, "InvalidTargetBucketForLogging")
    assert r["Error"]["TargetBucket"] == dst + "-missing"
    assert put(bucket=src + "-missing")[:2] == (404, "NoSuchBucket")
    assert put(TargetObjectKeyFormat={"PartitionedPrefix": {
        "PartitionDateSource": "Tomorrow"}})[:2] == (400, "MalformedXML")
    # Only the bucket owner sets logging, whatever the bucket policy allows.
    s3.put_bucket_policy(Bucket=src, Policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": "*", "Action": "s3:PutBucketLogging",
         "Resource": f"arn:aws:s3:::{src}"}]}))
    assert put(client=other)[:2] == (403, "AccessDenied")
    # A target with Object Lock default retention cannot receive logs.
    locked = f"err-lock-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=locked, ObjectLockEnabledForBucket=True)
    s3.put_object_lock_configuration(Bucket=locked, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled",
        "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}})
    assert put(TargetBucket=locked)[:2] == (400, "InvalidTargetBucketForLogging")
    # TargetGrants on a target that enforces bucket ownership (ACLs off).
    s3.put_bucket_ownership_controls(Bucket=dst, OwnershipControls={
        "Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]})
    owner = s3.get_bucket_acl(Bucket=src)["Owner"]
    grants = [{"Grantee": {"Type": "CanonicalUser", "ID": owner["ID"]},
               "Permission": "READ"}]
    assert put(TargetGrants=grants)[:2] == (400, "AccessControlListNotSupported")
    # Logging into the source bucket itself is allowed, as AWS allows it.
    s3.put_bucket_logging(Bucket=src, BucketLoggingStatus={
        "LoggingEnabled": {"TargetBucket": src, "TargetPrefix": "self/"}})


def test_cross_tenant_target_needs_the_target_policy(s3: Any, other: Any) -> None:
    src = _bucket(s3, "xt-src")
    theirs = _bucket(other, "xt-dst")
    conf = {"LoggingEnabled": {"TargetBucket": theirs, "TargetPrefix": "from-main/"}}
    status, code, r = _err(s3.put_bucket_logging, Bucket=src, BucketLoggingStatus=conf)
    assert (status, code) == (400, "InvalidTargetBucketForLogging")
    assert "must be the same" in r["Error"]["Message"]
    owner_id = s3.get_bucket_acl(Bucket=src)["Owner"]["ID"]
    other.put_bucket_policy(Bucket=theirs, Policy=json.dumps({
        "Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Service": "logging.s3.amazonaws.com"},
            "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{theirs}/from-main/*",
            "Condition": {"ArnLike": {"aws:SourceArn": f"arn:aws:s3:::{src}"},
                          "StringEquals": {"aws:SourceAccount": owner_id}}}]}))
    s3.put_bucket_logging(Bucket=src, BucketLoggingStatus=conf)
    rid = s3.put_object(Bucket=src, Key="k", Body=b"x")["ResponseMetadata"]["RequestId"]
    recs = _records_for(other, theirs, "from-main/", [rid])
    assert recs[rid][0][6] == "REST.PUT.OBJECT"


def test_log_objects_hold_every_request_in_aws_format(s3: Any, logged: LocalCluster,
                                                      other: Any) -> None:
    src, dst = _bucket(s3, "al-src"), _bucket(s3, "al-dst")
    before = s3.put_object(Bucket=src, Key="early", Body=b"x")["ResponseMetadata"]["RequestId"]
    s3.put_bucket_logging(Bucket=src, BucketLoggingStatus={
        "LoggingEnabled": {"TargetBucket": dst, "TargetPrefix": "log/"}})
    ids: dict[str, str] = {}
    ids["put"] = s3.put_object(Bucket=src, Key="dir/a b.txt", Body=b"hello")[
        "ResponseMetadata"]["RequestId"]
    got = s3.get_object(Bucket=src, Key="dir/a b.txt")
    got["Body"].read()
    ids["get"] = got["ResponseMetadata"]["RequestId"]
    ids["missing"] = _err(s3.get_object, Bucket=src, Key="nope")[2]["ResponseMetadata"][
        "RequestId"]
    anon = boto3.client("s3", endpoint_url=logged.endpoint, region_name="us-east-1",
                        config=no_retries(signature_version=UNSIGNED))
    ids["anon"] = _err(anon.get_object, Bucket=src, Key="dir/a b.txt")[2][
        "ResponseMetadata"]["RequestId"]
    ids["foreign"] = _err(other.get_object, Bucket=src, Key="dir/a b.txt")[2][
        "ResponseMetadata"]["RequestId"]
    s3.put_object(Bucket=src, Key="shared", Body=b"s", ACL="public-read")
    ids["by_acl"] = anon.get_object(Bucket=src, Key="shared")["ResponseMetadata"]["RequestId"]
    ids["copy"] = s3.copy_object(Bucket=src, Key="copy", CopySource={
        "Bucket": src, "Key": "dir/a b.txt"})["ResponseMetadata"]["RequestId"]
    ids["batch"] = s3.delete_objects(Bucket=src, Delete={"Objects": [
        {"Key": "copy"}, {"Key": "shared"}]})["ResponseMetadata"]["RequestId"]
    ids["list"] = s3.list_objects_v2(Bucket=src, Prefix="dir/")["ResponseMetadata"][
        "RequestId"]
    signed: dict[str, str] = {}  # presigned URLs' signatures: SigV4's, then SigV2's
    for name, version, field in (("v4", "s3v4", "X-Amz-Signature="), ("v2", "s3", "Signature=")):
        url = logged.client(signature_version=version).generate_presigned_url(
            "get_object", Params={"Bucket": src, "Key": "dir/a b.txt"}, ExpiresIn=600)
        signed[name] = url.split(field, 1)[1].split("&", 1)[0]
        with urllib.request.urlopen(url) as r:
            assert r.read() == b"hello"
            ids[name] = r.headers["x-amz-request-id"]
    recs = _records_for(s3, dst, "log/", list(ids.values()))
    assert before not in recs  # requests before logging was enabled are not logged
    for name, field in (("v4", "X-Amz-Signature="), ("v2", "Signature=")):
        uri = recs[ids[name]][0][8]  # anyone who reads the log could replay the URL
        assert signed[name] not in uri and f"{field}REDACTED" in uri, uri
        assert "Expires=" in uri and recs[ids[name]][0][21] == "QueryString"
    owner_id = s3.get_bucket_acl(Bucket=src)["Owner"]["ID"]
    other_id = other.get_bucket_acl(Bucket=_bucket(other, "al-who"))["Owner"]["ID"]
    now = datetime.now(UTC)
    for f, key in recs.values():
        assert f[0] == owner_id and f[1] == src
        when = datetime.strptime(f[2], "%d/%b/%Y:%H:%M:%S %z")
        assert abs((now - when).total_seconds()) < 120
        assert f[3] == "127.0.0.1"
        assert f[22] == logged.endpoint.split("//", 1)[1]  # Host header
        m = SIMPLE_KEY.match(key)
        assert m is not None and m.group("prefix") == "log/", key
    put, get = recs[ids["put"]][0], recs[ids["get"]][0]
    assert put[4] == owner_id and put[6:10] == [
        "REST.PUT.OBJECT", "dir/a%20b.txt", f"PUT /{src}/dir/a%20b.txt HTTP/1.1", "200"]
    assert put[10] == "-" and put[12] == "5"  # no error; object size
    assert put[19:22] == ["SigV4", "-", "AuthHeader"]
    assert get[6] == "REST.GET.OBJECT" and get[9] == "200" and get[11] == "5"
    missing = recs[ids["missing"]][0]
    assert missing[6:8] == ["REST.GET.OBJECT", "nope"] and missing[9:11] == ["404", "NoSuchKey"]
    anon_rec = recs[ids["anon"]][0]
    assert anon_rec[4] == "-" and anon_rec[9:11] == ["403", "AccessDenied"]
    assert anon_rec[19] == "-" and anon_rec[21] == "-"
    foreign = recs[ids["foreign"]][0]
    assert foreign[4] == other_id and foreign[9:11] == ["403", "AccessDenied"]
    assert get[25] == "-" and recs[ids["by_acl"]][0][25] == "Yes"  # ACL required
    by_id: dict[str, list[list[str]]] = {}
    for line in _log_lines(s3, dst, "log/"):
        f = _parse(line)
        by_id.setdefault(f[5], []).append(f)
    assert sorted((f[6], f[7]) for f in by_id[ids["copy"]]) == [
        ("REST.COPY.OBJECT", "copy"), ("REST.COPY.OBJECT_GET", "dir/a%20b.txt")]
    assert sorted((f[6], f[7], f[9]) for f in by_id[ids["batch"]]) == [
        ("BATCH.DELETE.OBJECT", "copy", "204"), ("BATCH.DELETE.OBJECT", "shared", "204"),
        ("REST.POST.MULTI_OBJECT_DELETE", "-", "200")]
    listing = recs[ids["list"]][0]
    assert listing[6:8] == ["REST.GET.BUCKET", "-"]
    assert listing[8] == f"GET /{src}?list-type=2&prefix=dir%2F&encoding-type=url HTTP/1.1"


def test_partitioned_keys_and_target_grants(s3: Any, other: Any) -> None:
    src, dst = _bucket(s3, "pk-src"), _bucket(s3, "pk-dst")
    reader = other.get_bucket_acl(Bucket=_bucket(other, "pk-who"))["Owner"]["ID"]
    s3.put_bucket_logging(Bucket=src, BucketLoggingStatus={"LoggingEnabled": {
        "TargetBucket": dst, "TargetPrefix": "part/",
        "TargetGrants": [{"Grantee": {"Type": "CanonicalUser", "ID": reader},
                          "Permission": "READ"}],
        "TargetObjectKeyFormat": {"PartitionedPrefix": {"PartitionDateSource": "EventTime"}}}})
    rid = s3.head_bucket(Bucket=src)["ResponseMetadata"]["RequestId"]
    f, key = _records_for(s3, dst, "part/", [rid])[rid]
    assert f[6] == "REST.HEAD.BUCKET"
    # The target grant is applied: the grantee reads the log object, and its ACL says so.
    assert rid in other.get_object(Bucket=dst, Key=key)["Body"].read().decode()
    grants = s3.get_object_acl(Bucket=dst, Key=key)["Grants"]
    assert {"Grantee": {"Type": "CanonicalUser", "ID": reader, "DisplayName": ANY},
            "Permission": "READ"} in grants
    owner_id = s3.get_bucket_acl(Bucket=src)["Owner"]["ID"]
    m = re.match(rf"^part/{re.escape(owner_id)}/us-east-1/{src}/(\d{{4}})/(\d{{2}})/(\d{{2}})/"
                 r"(\d{4})-(\d{2})-(\d{2})-\d{2}-\d{2}-\d{2}-[0-9A-F]{16}$", key)
    assert m is not None, key



def test_records_in_memory_at_a_clean_shutdown_are_delivered_after_restart(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """Records still in the gateway's memory at a clean shutdown (a stage interval of an
    hour) are staged then, survive the restart, and are delivered exactly once."""
    mp = pytest.MonkeyPatch()
    mp.setenv("TESSERA_ACCESS_LOG_FLUSH_S", FLUSH_S)
    mp.setenv("TESSERA_ACCESS_LOG_STAGE_S", "3600")
    c = LocalCluster(tmp_path_factory.mktemp("accesslog-restart"))
    try:
        c.start()
        s3 = c.client()
        src, dst = _bucket(s3, "rs-src"), _bucket(s3, "rs-dst")
        s3.put_bucket_logging(Bucket=src, BucketLoggingStatus={
            "LoggingEnabled": {"TargetBucket": dst, "TargetPrefix": "r/"}})
        ids = [s3.put_object(Bucket=src, Key=f"k{i}", Body=b"x")["ResponseMetadata"][
            "RequestId"] for i in range(3)]
        c.stop()
        c.start()
        s3 = c.client()
        _records_for(s3, dst, "r/", ids)
        lines = list(_log_lines(s3, dst, "r/"))
        for rid in ids:
            assert sum(_parse(line)[5] == rid for line in lines) == 1, rid
    finally:
        c.stop()
        mp.undo()


def test_a_raw_byte_in_a_header_neither_breaks_nor_loses_log_lines(
        s3: Any, logged: LocalCluster) -> None:
    """An anonymous request whose User-Agent holds a non-UTF-8 byte, a tab and a NEL is logged
    on one line with those escaped, and the legitimate requests staged with it are delivered
    (it used to fail the staging of the whole batch, which was then lost)."""
    src, dst = _bucket(s3, "raw-src"), _bucket(s3, "raw-dst")
    s3.put_bucket_logging(Bucket=src, BucketLoggingStatus={
        "LoggingEnabled": {"TargetBucket": dst, "TargetPrefix": "raw/"}})
    before = s3.put_object(Bucket=src, Key="k", Body=b"x")["ResponseMetadata"]["RequestId"]
    with socket.create_connection(("127.0.0.1", logged.port), timeout=30) as sock:
        sock.sendall(f"GET /{src}/k HTTP/1.1\r\nHost: 127.0.0.1:{logged.port}\r\n".encode()
                     + b"User-Agent: evil\xff\tagent\xc2\x85x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    assert head.startswith("HTTP/1.1 403"), head
    evil = re.search(r"(?im)^x-amz-request-id: (\S+)", head)
    assert evil is not None
    after = s3.get_object(Bucket=src, Key="k")["ResponseMetadata"]["RequestId"]
    recs = _records_for(s3, dst, "raw/", [before, evil.group(1), after])
    assert recs[evil.group(1)][0][16] == "evil\\xff\\x09agent\\x85x"


def _metric(logged: LocalCluster, name: str) -> float:
    """A counter on the gateway's /metrics (the admin listener), summed over its workers."""
    from tests.integration.cluster import fetch

    status, text = fetch(logged.env["TESSERA_ADMIN_URL"] + "/metrics")
    assert status == 200
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.decode().splitlines()
               if line.startswith(name))


def test_turnaround_unrouted_requests_and_delivery_metrics(s3: Any,
                                                           logged: LocalCluster) -> None:
    delivered = 'tessera_access_log_records_total{outcome="delivered"}'
    dropped = 'tessera_access_log_records_total{outcome="dropped_target"}'
    before = (_metric(logged, delivered), _metric(logged, dropped),
              _metric(logged, "tessera_access_log_objects_total"))
    src, dst = _bucket(s3, "ta-src"), _bucket(s3, "ta-dst")
    s3.put_bucket_logging(Bucket=src, BucketLoggingStatus={
        "LoggingEnabled": {"TargetBucket": dst, "TargetPrefix": "t/"}})
    body = os.urandom(2_000_000)
    ids = {"put": s3.put_object(Bucket=src, Key="big", Body=body)["ResponseMetadata"][
        "RequestId"]}
    got = s3.get_object(Bucket=src, Key="big")
    assert got["Body"].read() == body
    ids["get"] = got["ResponseMetadata"]["RequestId"]
    # Refused before routing (no resource takes PATCH), unsigned: logged, as the bucket is.
    host = logged.endpoint.split("//", 1)[1]
    with socket.create_connection((host.split(":")[0], int(host.split(":")[1])), 30) as c:
        c.sendall(f"PATCH /{src}/big HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n"
                  "Connection: close\r\n\r\n".encode())
        raw = b""
        while chunk := c.recv(65536):
            raw += chunk
    head = raw.split(b"\r\n\r\n", 1)[0].decode()
    assert head.startswith("HTTP/1.1 405"), head
    ids["patch"] = re.search(r"(?im)^x-amz-request-id: (\S+)", head).group(1)  # type: ignore[union-attr]
    recs = _records_for(s3, dst, "t/", list(ids.values()))
    for name, (f, _) in ((n, recs[i]) for n, i in ids.items()):
        total, turnaround = int(f[13]), int(f[14])  # AWS: turn-around <= total time
        assert 0 <= turnaround <= total, (name, f[13], f[14])
    patch = recs[ids["patch"]][0]
    assert patch[4] == "-" and patch[6:8] == ["REST.PATCH.UNKNOWN", "big"]
    assert patch[8] == f"PATCH /{src}/big HTTP/1.1" and patch[9:11] == ["405",
                                                                         "MethodNotAllowed"]
    # Records delivered, and records dropped because their target bucket is gone.
    lost, lost_dst = _bucket(s3, "ta-lost"), _bucket(s3, "ta-gone")
    s3.put_bucket_logging(Bucket=lost, BucketLoggingStatus={
        "LoggingEnabled": {"TargetBucket": lost_dst, "TargetPrefix": ""}})
    s3.delete_bucket(Bucket=lost_dst)
    for i in range(3):
        s3.put_object(Bucket=lost, Key=f"k{i}", Body=b"x")
    wait_for(lambda: _metric(logged, dropped) >= before[1] + 3, "dropped records counted")
    assert _metric(logged, delivered) >= before[0] + len(ids)
    assert _metric(logged, "tessera_access_log_objects_total") >= before[2] + 1
