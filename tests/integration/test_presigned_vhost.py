"""Presigned URLs (fetched with urllib) and virtual-hosted-style addressing."""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from unittest import mock
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import boto3
import botocore.auth

from ops.botoconfig import no_retries
from tests.integration.cluster import LocalCluster

BUCKET = "presign-flow"
VHOST_DOMAIN = "s3.tessera.test"


def _fetch(url: str, method: str = "GET", data: bytes | None = None,
           headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def _code(body: bytes) -> str:
    m = re.search(rb"<Code>([^<]*)</Code>", body)
    return m.group(1).decode() if m else ""


def _with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    q = dict(parse_qsl(parts.query, keep_blank_values=True))
    q.update(changes)
    return urlunsplit(parts._replace(query=urlencode(q)))


@contextlib.contextmanager
def _clock(when: dt.datetime) -> Iterator[None]:
    """Sign as if at `when`: botocore's own signer and the CRT one read the clock here."""

    def now(remove_tzinfo: bool = True) -> dt.datetime:
        return when.replace(tzinfo=None) if remove_tzinfo else when

    modules = [botocore.auth]
    with contextlib.suppress(ImportError):
        modules.append(importlib.import_module("botocore.crt.auth"))
    with contextlib.ExitStack() as stack:
        for m in modules:
            stack.enter_context(mock.patch.object(m, "get_current_datetime", now))
        yield


def _signer(cluster: LocalCluster):
    """boto3 presigns with SigV2 unless told otherwise; the gateway speaks SigV4 only."""
    return cluster.client(signature_version="s3v4")


def test_presigned_get_and_put(cluster: LocalCluster) -> None:
    s3 = _signer(cluster)
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="dir/hello world+.txt", Body=b"presigned hello",
                  ContentType="text/plain")
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": BUCKET, "Key": "dir/hello world+.txt"}, ExpiresIn=300)
    status, body, headers = _fetch(url)
    assert (status, body) == (200, b"presigned hello")
    assert headers["Content-Type"] == "text/plain"
    # Response overrides are part of the signed query.
    url = s3.generate_presigned_url(
        "get_object", ExpiresIn=300,
        Params={"Bucket": BUCKET, "Key": "dir/hello world+.txt",
                "ResponseContentDisposition": 'attachment; filename="x.txt"'})
    status, _, headers = _fetch(url)
    assert status == 200 and headers["Content-Disposition"] == 'attachment; filename="x.txt"'
    # HEAD with a URL presigned for head_object.
    url = s3.generate_presigned_url(
        "head_object", Params={"Bucket": BUCKET, "Key": "dir/hello world+.txt"}, ExpiresIn=300)
    status, body, headers = _fetch(url, method="HEAD")
    assert status == 200 and headers["Content-Length"] == "15" and body == b""

    put_url = s3.generate_presigned_url(
        "put_object", Params={"Bucket": BUCKET, "Key": "uploaded.bin"}, ExpiresIn=300)
    payload = bytes(range(256)) * 1000
    status, _, headers = _fetch(put_url, method="PUT", data=payload)
    assert status == 200 and headers["ETag"]
    assert s3.get_object(Bucket=BUCKET, Key="uploaded.bin")["Body"].read() == payload

    # A URL presigned for one key does not open another.
    status, body, _ = _fetch(url.replace("hello%20world", "hello%20there"), method="GET")
    assert status == 403 and _code(body) == "SignatureDoesNotMatch"


def test_presigned_expired_and_tampered(cluster: LocalCluster) -> None:
    s3 = _signer(cluster)
    s3.create_bucket(Bucket=BUCKET + "-2")
    s3.put_object(Bucket=BUCKET + "-2", Key="k", Body=b"secret")
    params = {"Bucket": BUCKET + "-2", "Key": "k"}
    # Signed two hours ago, valid for one: expired an hour ago.
    past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    with _clock(past):
        expired = s3.generate_presigned_url("get_object", Params=params, ExpiresIn=3600)
    assert past.strftime("%Y%m%dT%H%M%SZ") in expired
    status, body, headers = _fetch(expired)
    assert status == 403 and _code(body) == "AccessDenied"
    assert b"<Message>Request has expired</Message>" in body
    assert b"<X-Amz-Expires>3600</X-Amz-Expires>" in body
    assert headers.get("x-amz-request-id")

    good = s3.generate_presigned_url("get_object", Params=params, ExpiresIn=300)
    assert _fetch(good)[0] == 200
    sig = dict(parse_qsl(urlsplit(good).query))["X-Amz-Signature"]
    forged = sig[:-1] + ("0" if sig[-1] != "0" else "1")
    for url in (_with_query(good, **{"X-Amz-Signature": forged}),
                _with_query(good, **{"X-Amz-Expires": "600"}),
                good.replace("/k?", "/k2?")):
        status, body, _ = _fetch(url)
        assert status == 403 and _code(body) == "SignatureDoesNotMatch", (url, body)
    # A PUT with a GET URL is refused; nothing is written.
    status, body, _ = _fetch(good, method="PUT", data=b"overwrite")
    assert status == 403 and _code(body) == "SignatureDoesNotMatch"
    assert s3.get_object(**params)["Body"].read() == b"secret"
    # Unknown access key.
    status, body, _ = _fetch(good.replace(cluster.env["AWS_ACCESS_KEY_ID"], "AKIANOSUCHKEY0000000"))
    assert status == 403 and _code(body) == "InvalidAccessKeyId"


def _vhost_client(cluster: LocalCluster):
    """A boto3 client in virtual-hosted style: `BUCKET.s3.tessera.test:PORT` in the Host header.

    The name does not resolve here, so the connection goes to 127.0.0.1 while the request
    (and its signature) carries the virtual host, as a client behind DNS would send it.
    """
    port = urlsplit(cluster.endpoint).port
    virtual = boto3.client(
        "s3", endpoint_url=f"http://{VHOST_DOMAIN}:{port}",
        aws_access_key_id=cluster.env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=cluster.env["AWS_SECRET_ACCESS_KEY"],
        region_name=cluster.env["AWS_DEFAULT_REGION"],
        config=no_retries(s3={"addressing_style": "virtual"}, signature_version="s3v4"))
    hosts: list[str] = []

    def to_loopback(request, **_: object) -> None:
        parts = urlsplit(request.url)
        hosts.append(parts.netloc)
        request.headers["Host"] = parts.netloc
        request.url = urlunsplit(parts._replace(netloc=f"127.0.0.1:{port}"))

    virtual.meta.events.register_last("before-send.s3", to_loopback)
    return virtual, hosts


def test_virtual_hosted_style(gateway_set_cluster: Callable[..., LocalCluster]) -> None:
    c = gateway_set_cluster(f'virtual_host_domain = "{VHOST_DOMAIN}"')
    path_style = c.client()
    path_style.create_bucket(Bucket="vhost-bucket")
    s3, hosts = _vhost_client(c)
    s3.put_object(Bucket="vhost-bucket", Key="a/b.txt", Body=b"virtual")
    s3.put_object(Bucket="vhost-bucket", Key="a/c.txt", Body=b"hosted")
    assert hosts[-1].startswith(f"vhost-bucket.{VHOST_DOMAIN}:")
    assert s3.get_object(Bucket="vhost-bucket", Key="a/b.txt")["Body"].read() == b"virtual"
    assert s3.head_object(Bucket="vhost-bucket", Key="a/c.txt")["ContentLength"] == 6
    listed = s3.list_objects_v2(Bucket="vhost-bucket", Prefix="a/")
    assert [o["Key"] for o in listed["Contents"]] == ["a/b.txt", "a/c.txt"]
    assert s3.list_objects(Bucket="vhost-bucket", Delimiter="/")["CommonPrefixes"] == \
        [{"Prefix": "a/"}]
    assert s3.get_bucket_location(Bucket="vhost-bucket").get("LocationConstraint") is None
    s3.head_bucket(Bucket="vhost-bucket")
    # Path style still works on the same gateway, for the same data.
    assert path_style.get_object(Bucket="vhost-bucket", Key="a/c.txt")["Body"].read() == b"hosted"
    # A presigned virtual-hosted URL, fetched with its Host header.
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "vhost-bucket",
                                                          "Key": "a/b.txt"}, ExpiresIn=60)
    parts = urlsplit(url)
    assert parts.netloc.startswith("vhost-bucket.")
    loop = urlunsplit(parts._replace(netloc=f"127.0.0.1:{parts.port}"))
    assert _fetch(loop, headers={"Host": parts.netloc})[:2] == (200, b"virtual")
    # Bucket operations by virtual host: create and delete.
    s3.create_bucket(Bucket="vhost-second")
    assert "vhost-second" in [b["Name"] for b in path_style.list_buckets()["Buckets"]]
    s3.delete_bucket(Bucket="vhost-second")
    assert "vhost-second" not in [b["Name"] for b in path_style.list_buckets()["Buckets"]]
