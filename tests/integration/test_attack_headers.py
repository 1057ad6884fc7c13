"""Outside-attacker checks on values a request asks the gateway to store and send back as
response headers (metadata, Content-Type, a POST form's fields and redirect, response-*
overrides): one no HTTP response can carry (a control character, bytes that are not UTF-8)
is a 400 with nothing stored, never an object whose every GET breaks the connection, and
the server keeps serving."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import socket
import uuid
from datetime import UTC, datetime
from typing import Any
from xml.etree import ElementTree as ET

import pytest
import requests
from botocore.exceptions import ClientError

from tests.integration.cluster import LocalCluster

BAD_VALUES = ["x\r\nSet-Cookie: evil=1", "a\nb", "a\x00b", "a\x01b"]


@pytest.fixture(scope="module")
def w(cluster: LocalCluster) -> dict[str, Any]:
    s3 = cluster.client()
    bucket = f"atk-hdr-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"kept")
    return {"s3": s3, "bucket": bucket, "cluster": cluster}


def _absent(s3: Any, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        return exc.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    return False


def _serving(w: dict[str, Any]) -> None:
    assert w["s3"].get_object(Bucket=w["bucket"], Key="k")["Body"].read() == b"kept"


def _post(w: dict[str, Any], key: str, fields: dict[str, str]) -> requests.Response:
    form = w["s3"].generate_presigned_post(w["bucket"], key, Fields=fields,
                                           Conditions=[{k: v} for k, v in fields.items()])
    return requests.post(form["url"], data=form["fields"], files={"file": ("f", b"body")},
                         allow_redirects=False, timeout=60)


@pytest.mark.parametrize("field", ["x-amz-meta-a", "Content-Type", "Cache-Control",
                                   "Content-Disposition", "success_action_redirect"])
def test_post_form_field_no_header_can_carry_is_400_and_stores_nothing(
        w: dict[str, Any], field: str) -> None:
    for i, value in enumerate(BAD_VALUES):
        key = f"post-{field}-{i}"
        r = _post(w, key, {field: value})
        assert r.status_code == 400 and "<Code>InvalidArgument</Code>" in r.text, (
            field, value, r.status_code, r.text)
        assert _absent(w["s3"], w["bucket"], key), (field, value)
    _serving(w)


def test_post_form_metadata_name_no_header_can_carry_is_400(w: dict[str, Any]) -> None:
    for i, (name, code) in enumerate((("x-amz-meta-a b", "InvalidArgument"),
                                      ("x-amz-meta-a:b", "InvalidArgument"),
                                      ("x-amz-meta-a\x01b", "MalformedPOSTRequest"))):
        r = _post(w, f"post-name-{i}", {name: "v"})
        assert r.status_code == 400 and f"<Code>{code}</Code>" in r.text, (name, r.text)
        assert _absent(w["s3"], w["bucket"], f"post-name-{i}")
    _serving(w)


@pytest.mark.parametrize("param", ["ResponseContentType", "ResponseContentDisposition",
                                   "ResponseCacheControl", "ResponseContentLanguage",
                                   "ResponseContentEncoding"])
def test_response_override_no_header_can_carry_is_400(w: dict[str, Any], param: str) -> None:
    for value in BAD_VALUES:
        url = w["s3"].generate_presigned_url(
            "get_object", Params={"Bucket": w["bucket"], "Key": "k", param: value})
        r = requests.get(url, timeout=60)
        assert r.status_code == 400 and "<Code>InvalidArgument</Code>" in r.text, (
            param, value, r.status_code, r.text)
    _serving(w)


def _signed_raw_put(cluster: LocalCluster, path: str, raw_headers: dict[str, bytes],
                    body: bytes) -> bytes:
    """A SigV4 PUT whose header values are raw bytes: `signed_raw`'s answer."""
    return signed_raw(cluster, "PUT", path, "", raw_headers, body)


def signed_raw(cluster: LocalCluster, method: str, path: str, query: str,
               raw_headers: dict[str, bytes], body: bytes = b"") -> bytes:
    """A SigV4 request whose header values are raw bytes (signed as bytes, as a client that
    sends them would), over a plain socket; the whole answer. `query` is already encoded
    as SigV4 wants it (sorted, unreserved characters literal)."""
    env, host = cluster.env, f"127.0.0.1:{cluster.port}"
    now = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    scope = f"{now[:8]}/us-east-1/s3/aws4_request"
    payload = hashlib.sha256(body).hexdigest()
    hdrs = {k.lower(): v for k, v in raw_headers.items()}
    hdrs.update({"host": host.encode(), "x-amz-date": now.encode(),
                 "x-amz-content-sha256": payload.encode()})
    names = sorted(hdrs)
    canonical = b"\n".join([method.encode(), path.encode(), query.encode(),
                            *[n.encode() + b":" + hdrs[n] for n in names], b"",
                            ";".join(names).encode(), payload.encode()])
    to_sign = "\n".join(["AWS4-HMAC-SHA256", now, scope,
                         hashlib.sha256(canonical).hexdigest()]).encode()
    key = ("AWS4" + env["AWS_SECRET_ACCESS_KEY"]).encode()
    for part in (now[:8], "us-east-1", "s3", "aws4_request"):
        key = hmac.digest(key, part.encode(), "sha256")
    sig = hmac.digest(key, to_sign, "sha256").hex()
    auth = (f"AWS4-HMAC-SHA256 Credential={env['AWS_ACCESS_KEY_ID']}/{scope}, "
            f"SignedHeaders={';'.join(names)}, Signature={sig}")
    target = path + ("?" + query if query else "")
    lines = [f"{method} {target} HTTP/1.1".encode(),
             *[n.encode() + b": " + v for n, v in hdrs.items()],
             b"Authorization: " + auth.encode(), f"Content-Length: {len(body)}".encode(),
             b"Connection: close"]
    with socket.create_connection(("127.0.0.1", cluster.port), timeout=60) as sock:
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize("name", ["x-amz-meta-a", "content-type",
                                  "x-amz-website-redirect-location"])
def test_signed_header_that_is_not_utf8_is_400_and_stores_nothing(
        w: dict[str, Any], name: str) -> None:
    key = f"raw-{name}"
    answer = _signed_raw_put(w["cluster"], f"/{w['bucket']}/{key}", {name: b"/\xff\xfe"},
                             b"body")
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:600]
    assert b"<Code>InvalidArgument</Code>" in answer, answer[:600]
    assert _absent(w["s3"], w["bucket"], key)
    good = _signed_raw_put(w["cluster"], f"/{w['bucket']}/{key}",
                           {name: "/caf\u00e9".encode()}, b"body")  # UTF-8: signed and kept
    assert good.startswith(b"HTTP/1.1 200 "), good[:600]
    _serving(w)


def test_tagging_header_with_a_character_xml_cannot_carry_is_400(w: dict[str, Any]) -> None:
    """x-amz-tagging is URL-encoded, so it can name any character: one GetObjectTagging's XML
    cannot carry back is InvalidTag (the tag was kept, then silently left out of the answer)."""
    s3 = w["s3"]
    for i, tagging in enumerate(("a=%00b", "a%01=b", "a=%0Bc", "a=%EF%BF%BE")):
        key = f"tag-{i}"
        with pytest.raises(ClientError) as ei:
            s3.put_object(Bucket=w["bucket"], Key=key, Body=b"x", Tagging=tagging)
        assert ei.value.response["Error"]["Code"] == "InvalidTag", tagging
        assert _absent(s3, w["bucket"], key), tagging
    s3.put_object(Bucket=w["bucket"], Key="tag-ok", Body=b"x", Tagging="a=b%09c")
    assert s3.get_object_tagging(Bucket=w["bucket"], Key="tag-ok")["TagSet"] == [
        {"Key": "a", "Value": "b\tc"}]
    _serving(w)


def test_user_metadata_limit_counts_utf8_bytes(w: dict[str, Any]) -> None:
    """User metadata is at most 2 KB as S3 measures it: the UTF-8 bytes of every key and
    value (it counted characters, so 2048 two-byte characters, 4 KB, were kept)."""
    big = ("\u00e9" * 1100).encode()  # 1,100 characters, 2,200 bytes
    answer = _signed_raw_put(w["cluster"], f"/{w['bucket']}/meta-big", {"x-amz-meta-a": big},
                             b"body")
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:600]
    assert b"<Code>MetadataTooLarge</Code>" in answer, answer[:600]
    assert _absent(w["s3"], w["bucket"], "meta-big")
    fits = ("\u00e9" * 1000).encode()  # 2,000 bytes and a one-byte key: kept
    answer = _signed_raw_put(w["cluster"], f"/{w['bucket']}/meta-fits", {"x-amz-meta-a": fits},
                             b"body")
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:600]
    head = w["s3"].head_object(Bucket=w["bucket"], Key="meta-fits")
    # sent back RFC 2047 encoded, as AWS documents for a value that is not US-ASCII
    assert head["ResponseMetadata"]["HTTPHeaders"]["x-amz-meta-a"] == (
        "=?UTF-8?B?" + base64.b64encode(fits).decode() + "?=")


@pytest.mark.parametrize("param", ["ResponseContentType", "ResponseContentDisposition",
                                   "ResponseCacheControl", "ResponseContentLanguage",
                                   "ResponseContentEncoding"])
def test_response_override_past_iso_8859_1_is_s3s_invalid_argument(
        w: dict[str, Any], param: str) -> None:
    """S3 sends an override in ISO-8859-1 and refuses one it cannot represent there (a
    "’", U+2019) with 400 InvalidArgument "Header value cannot be represented using
    ISO-8859-1." naming the parameter (the error dataverse#4524 and grid#1716 quote); the
    gateway sent it as UTF-8 bytes. A value ISO-8859-1 holds ("ü") is still served."""
    name = "response-" + "-".join(p.lower() for p in re.findall("[A-Z][a-z]*", param)[1:])
    value = 'attachment; filename="a’b.txt"'
    url = w["s3"].generate_presigned_url(
        "get_object", Params={"Bucket": w["bucket"], "Key": "k", param: value})
    r = requests.get(url, timeout=60)
    assert r.status_code == 400, r.text
    err = ET.fromstring(r.content)
    assert [err.findtext(t) for t in ("Code", "Message", "ArgumentName", "ArgumentValue")] == [
        "InvalidArgument", "Header value cannot be represented using ISO-8859-1.", name, value]
    url = w["s3"].generate_presigned_url(
        "get_object", Params={"Bucket": w["bucket"], "Key": "k", param: "gr\u00fcn"})
    assert requests.get(url, timeout=60).status_code == 200
    _serving(w)


@pytest.mark.parametrize("param", ["ResponseContentType", "ResponseContentDisposition",
                                   "ResponseCacheControl", "ResponseContentLanguage",
                                   "ResponseContentEncoding"])
def test_response_override_leaves_as_iso_8859_1_bytes(w: dict[str, Any], param: str) -> None:
    """An override ISO-8859-1 holds ("ü") leaves as its ISO-8859-1 byte (0xFC), the set S3
    writes it in, so boto3 (http.client reads header bytes as ISO-8859-1) reads back the
    value it sent, GET and HEAD alike; it left as UTF-8 (0xC3 0xBC), read back "Ã¼"."""
    header = {"ResponseContentType": "ContentType", "ResponseCacheControl": "CacheControl",
              "ResponseContentDisposition": "ContentDisposition",
              "ResponseContentLanguage": "ContentLanguage",
              "ResponseContentEncoding": "ContentEncoding"}[param]
    value = 'attachment; filename="gr\u00fcn \u00e9t\u00e9.txt"'
    for call in (w["s3"].get_object, w["s3"].head_object):
        assert call(Bucket=w["bucket"], Key="k", **{param: value})[header] == value
    url = w["s3"].generate_presigned_url(
        "get_object", Params={"Bucket": w["bucket"], "Key": "k", param: value})
    r = requests.get(url, timeout=60)
    name = "-".join(re.findall("[A-Z][a-z]*", param)[1:])
    assert r.status_code == 200 and r.headers[name].encode("latin-1") == value.encode("latin-1")
    _serving(w)
