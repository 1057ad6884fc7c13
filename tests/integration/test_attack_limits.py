"""Outside-attacker checks on request limits: a request head over its size cap, numbers too
long for int(), continuation tokens that are not a key, a POST form of countless empty
fields. Each is a clear S3 error (never a 500, never held in memory or holding the event
loop) and the server keeps serving."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import socket
import uuid
from typing import Any

import pytest
import requests
from botocore.exceptions import ClientError

from gateway.s3.sigv4_sign import sign_headers
from storage.config import ENV_ADMIN_ACCESS_KEY, ENV_ADMIN_SECRET_KEY, GatewayConfig
from tests.integration.cluster import LocalCluster
from tests.integration.test_attack_headers import signed_raw
from tests.integration.test_hardening import wait_for_line

NINES = "9" * 5000  # past CPython's 4,300-digit guard of int()
HEAD_MAX_BYTES = GatewayConfig().max_header_bytes  # the test cluster's (the default)


@pytest.fixture(scope="module")
def w(cluster: LocalCluster) -> dict[str, Any]:
    s3 = cluster.client()
    bucket = f"atk-lim-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"0123456789")
    return {"s3": s3, "bucket": bucket, "cluster": cluster}


def _serving(w: dict[str, Any]) -> None:
    assert w["s3"].get_object(Bucket=w["bucket"], Key="k")["Body"].read() == b"0123456789"


def _code(answer: bytes) -> tuple[int, str | None]:
    status = int(answer.split(b" ", 2)[1])
    found = re.search(rb"<Code>([^<]*)</Code>", answer)
    return status, found.group(1).decode() if found else None


def test_continuation_token_that_is_not_a_utf8_key_is_invalid_argument(
        w: dict[str, Any]) -> None:
    """'aaaa' is base64 of b'i\\xa6\\x9a', no key's UTF-8: was a 500 (a key with lone
    surrogates reached the metadata key packer)."""
    for call in (lambda: w["s3"].list_objects_v2(Bucket=w["bucket"], ContinuationToken="aaaa"),
                 lambda: w["s3"].list_buckets(ContinuationToken="aaaa")):
        with pytest.raises(ClientError) as exc:
            call()
        assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert exc.value.response["Error"]["Code"] == "InvalidArgument"
    _serving(w)


@pytest.mark.parametrize(("spec", "status", "body"), [
    (f"bytes=0-{NINES}", 206, b"0123456789"),  # an end past the object: to its end
    (f"bytes=-{NINES}", 206, b"0123456789"),  # a suffix longer than the object: all of it
    (f"bytes={'0' * 5000}2-3", 206, b"23"),  # leading zeros are only zeros
], ids=["end", "suffix", "zeros"])
def test_range_numbers_past_int_digit_limit_are_read_as_numbers(
        w: dict[str, Any], spec: str, status: int, body: bytes) -> None:
    r = w["s3"].get_object(Bucket=w["bucket"], Key="k", Range=spec)
    assert r["ResponseMetadata"]["HTTPStatusCode"] == status and r["Body"].read() == body
    _serving(w)


def test_range_start_past_int_digit_limit_is_invalid_range(w: dict[str, Any]) -> None:
    with pytest.raises(ClientError) as exc:
        w["s3"].get_object(Bucket=w["bucket"], Key="k", Range=f"bytes={NINES}-")
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 416
    assert exc.value.response["Error"]["Code"] == "InvalidRange"
    _serving(w)


def test_delete_if_match_size_past_int_digit_limit_is_not_implemented(
        w: dict[str, Any]) -> None:
    """A directory-bucket condition: refused whatever its value (s3low22)."""
    answer = signed_raw(w["cluster"], "DELETE", f"/{w['bucket']}/k", "",
                        {"x-amz-if-match-size": NINES.encode()})
    assert _code(answer) == (501, "NotImplemented")
    _serving(w)


def test_complete_head_over_the_cap_is_request_header_section_too_large(
        w: dict[str, Any]) -> None:
    """8 KB header lines: each within aiohttp's own limits, together over the cap (and the
    same head a little under it is served)."""
    path = f"/{w['bucket']}/k"
    under = {f"x-pad-{i}": b"p" * 6000 for i in range(2)}
    assert _code(signed_raw(w["cluster"], "GET", path, "", under))[0] == 200
    lines = {f"x-pad-{i}": b"p" * 8000 for i in range(9)}
    assert sum(len(v) for v in lines.values()) > HEAD_MAX_BYTES
    answer = signed_raw(w["cluster"], "GET", path, "", lines)
    assert _code(answer) == (400, "RequestHeaderSectionTooLarge")
    assert f"<MaxSizeAllowed>{HEAD_MAX_BYTES}</MaxSizeAllowed>".encode() in answer
    _serving(w)


def _refused_whole(port: int) -> tuple[dict[str, str], bytes]:
    """The headers and body a server sends to a head that grows past the cap (880 KB of
    header lines within aiohttp's 8 KB each, no blank line), sent whole and then the
    sending side closed: every byte must be taken and the answer end in an orderly close
    (it was a reset: the server closed on unread bytes, and the 400 could be lost)."""
    head = b"GET /x HTTP/1.1\r\nHost: x\r\n" + b"".join(
        b"x-pad-%d: %s\r\n" % (i, b"p" * 8000) for i in range(110))
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(head)  # no BrokenPipeError / ConnectionResetError
        sock.shutdown(socket.SHUT_WR)
        while chunk := sock.recv(65536):  # no ConnectionResetError
            answer += chunk
    top, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = top.decode("latin-1").split("\r\n")
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines)}
    headers[":status"] = status_line.split(" ")[1]
    assert int(headers["content-length"]) == len(body)
    return headers, body


def test_unfinished_head_over_the_cap_is_refused_before_it_ends(w: dict[str, Any]) -> None:
    """A head still growing past the cap is answered (as every S3 answer: request id, Date)
    and the connection closed once the client is done (it was held, 0.8 MB here and up to
    2 MB a connection, until the header deadline)."""
    headers, body = _refused_whole(w["cluster"].port)
    assert _code(b"HTTP/1.1 %s x\r\n\r\n" % headers[":status"].encode() + body) == (
        400, "RequestHeaderSectionTooLarge")
    assert f"<MaxSizeAllowed>{HEAD_MAX_BYTES}</MaxSizeAllowed>".encode() in body
    assert headers["content-type"] == "application/xml"
    assert re.fullmatch(r"[0-9A-F]{16}", headers["x-amz-request-id"])
    assert f"<RequestId>{headers['x-amz-request-id']}</RequestId>".encode() in body
    assert headers["date"].endswith(" GMT") and headers["connection"] == "close"
    _serving(w)


def test_unfinished_head_over_the_cap_on_the_admin_port_is_json(w: dict[str, Any]) -> None:
    """The admin API and console speak JSON: their refusal is theirs, not S3's XML."""
    headers, body = _refused_whole(w["cluster"].admin_port)
    assert headers[":status"] == "431" and headers["content-type"].startswith("application/json")
    assert json.loads(body)["error"]["code"] == "RequestHeaderSectionTooLarge"
    assert "x-amz-request-id" not in headers and headers["date"].endswith(" GMT")
    _serving(w)


UNPARSABLE = {  # heads aiohttp's parser refuses before any handler runs -> AWS's code
    "garbage": (b"\x16\x03\x01\x02\x00\r\n\r\n", "BadRequest"),
    "request line": (b"GET / HTTP/1.1 junk\r\nHost: x\r\n\r\n", "BadRequest"),
    "request line too long": (b"GET /" + b"a" * 17000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
                              "RequestHeaderSectionTooLarge"),
    "too many headers": (b"GET / HTTP/1.1\r\nHost: x\r\n"
                         + b"".join(b"x-h%d: v\r\n" % i for i in range(200)) + b"\r\n",
                         "RequestHeaderSectionTooLarge"),
    "invalid header byte": (b"GET / HTTP/1.1\r\nHost: x\r\nBad\x01Name: v\r\n\r\n",
                            "BadRequest"),
    "chunked framing": (b"PUT /b/k HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"zz\r\nabc\r\n0\r\n\r\n", "BadRequest"),
}


def _answer_to(port: int, head: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of the one answer to `head` (the server closes after it)."""
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(head)
        while chunk := sock.recv(65536):
            answer += chunk
    top, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = top.decode("latin-1").split("\r\n")
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines)}
    assert int(headers["content-length"]) == len(body)
    return int(status_line.split(" ")[1]), headers, body


def test_heads_the_parser_refuses_are_aws_errors_logged_in_one_line(
        w: dict[str, Any]) -> None:
    """Garbage, a request line or header count past aiohttp's limits, an invalid header
    byte, bad chunked framing: AWS's 400 XML (request id, Date), one warning line each in
    the log and no traceback (they were aiohttp's plain text and an ERROR traceback)."""
    log = w["cluster"].data / "logs" / "gateway.log"
    mark = log.stat().st_size
    for name, (head, code) in UNPARSABLE.items():
        status, headers, body = _answer_to(w["cluster"].port, head)
        assert (status, _code(b"HTTP/1.1 400 x\r\n\r\n" + body)[1]) == (400, code), name
        assert headers["content-type"] == "application/xml", name
        assert f"<RequestId>{headers['x-amz-request-id']}</RequestId>".encode() in body
        assert headers["date"].endswith(" GMT")
        _serving(w)
    # the last one logged (lines come in order): then all of them are in the log
    wait_for_line(log, mark, re.compile("refused an unparsable request.*chunk size"))
    with open(log, "rb") as f:
        f.seek(mark)
        lines = f.read().decode(errors="replace").splitlines()
    refused = [json.loads(line) for line in lines if "unparsable request" in line]
    assert len(refused) == len(UNPARSABLE) - 1  # the TLS-like garbage: debug level
    assert {line["level"] for line in refused} == {"warning"}
    assert not any("Traceback" in line or '"aiohttp.server"' in line for line in lines)
    assert not any("aaaaaaaa" in line or "Bad\\u0001Name" in line for line in refused)


LATER_FRAMING = {  # chunked bodies whose framing breaks after the handler began reading
    "chunk size": (b"5\r\nhello\r\nzz\r\nabc\r\n0\r\n\r\n", "Invalid character in chunk size"),
    "chunk end": (b"5\r\nhello\r\n3\r\nabcXX0\r\n\r\n", "Expected LF after chunk data"),
}


def _until_closed(sock: socket.socket) -> bytes:
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return answer


def test_chunked_framing_broken_in_a_later_read_is_bad_request_in_one_line(
        w: dict[str, Any]) -> None:
    """The body's transfer-coding framing breaks in a socket read after the head (sent only
    once the gateway answered 100 Continue, so the handler is reading): AWS's 400 BadRequest
    as for a head the parser refuses, one warning line and no traceback, nothing stored, the
    server serving on. aiohttp's C parser queued it as a request of its own: the handler
    waited 20 s for body bytes and answered RequestTimeout, then aiohttp logged a traceback."""
    cluster, s3 = w["cluster"], w["s3"]
    log = cluster.data / "logs" / "gateway.log"
    mark = log.stat().st_size
    key = f"framing-{uuid.uuid4().hex[:8]}"
    url = s3.generate_presigned_url("put_object", Params={"Bucket": w["bucket"], "Key": key})
    target = url.split(f":{cluster.port}", 1)[1]
    head = (f"PUT {target} HTTP/1.1\r\nHost: 127.0.0.1:{cluster.port}\r\n"
            "Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n").encode()
    for name, (body, _) in LATER_FRAMING.items():
        answer = _after_continue(cluster.port, head, body)
        assert _code(answer) == (400, "BadRequest"), (name, answer[:300])
        _serving(w)
    with pytest.raises(ClientError) as missing:
        s3.head_object(Bucket=w["bucket"], Key=key)
    assert missing.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    wait_for_line(log, mark, re.compile("broken framing.*" + LATER_FRAMING["chunk end"][1]))
    with open(log, "rb") as f:
        f.seek(mark)
        lines = f.read().decode(errors="replace").splitlines()
    refused = [json.loads(line) for line in lines if "broken framing" in line]
    assert [r["level"] for r in refused] == ["warning", "warning"]
    assert all(why in r["msg"] for r, (_, why) in zip(refused, LATER_FRAMING.values(),
                                                      strict=True))
    assert not any("Traceback" in line or '"aiohttp.server"' in line for line in lines)
    assert not any("hello" in line or "abcXX" in line for line in refused)


def _after_continue(port: int, head: bytes, body: bytes) -> bytes:
    """The answer to `head`, whose `body` is sent once the server answered 100 Continue."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(head)
        interim = b""
        while not interim.endswith(b"\r\n\r\n"):
            interim += sock.recv(1)
        assert interim.startswith(b"HTTP/1.1 100"), interim
        sock.sendall(body)
        return _until_closed(sock)


def test_chunked_framing_broken_in_a_later_read_on_the_admin_port_is_json(
        w: dict[str, Any]) -> None:
    """The admin API's answer to the same: its 400 JSON and one warning line (the body read
    waited until the client gave up)."""
    env, port = w["cluster"].env, w["cluster"].admin_port
    signed = sign_headers("POST", f"http://127.0.0.1:{port}/admin/v1/tenants", {}, b"",
                          env[ENV_ADMIN_ACCESS_KEY], env[ENV_ADMIN_SECRET_KEY])
    head = ("POST /admin/v1/tenants HTTP/1.1\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in signed.items())
            + "Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n").encode()
    log = w["cluster"].data / "logs" / "gateway.log"
    mark = log.stat().st_size
    answer = _after_continue(port, head, LATER_FRAMING["chunk size"][0])
    status, _, body = answer.partition(b"\r\n\r\n")
    assert status.split(b" ", 2)[1] == b"400", answer[:300]
    assert json.loads(body)["error"]["code"] == "BadRequest"
    _serving(w)
    line = wait_for_line(log, mark, re.compile("admin request body with broken framing"))
    assert json.loads(line)["level"] == "warning" and "zz" not in line
    with open(log, "rb") as f:
        f.seek(mark)
        assert b"Traceback" not in f.read()


def test_head_the_parser_refuses_on_the_admin_port_is_json(w: dict[str, Any]) -> None:
    status, headers, body = _answer_to(w["cluster"].admin_port,
                                       UNPARSABLE["request line"][0])
    assert status == 400 and headers["content-type"].startswith("application/json")
    assert json.loads(body)["error"] == {"code": "BadRequest", "message": "Bad status line"}
    _serving(w)


def test_head_bytes_past_the_drop_bound_end_the_connection(w: dict[str, Any]) -> None:
    """What a refused client still sends is read and dropped up to a bound, not forever."""
    with socket.create_connection(("127.0.0.1", w["cluster"].port), timeout=60) as sock:
        sock.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n")
        line = b"x-pad: " + b"p" * 8000 + b"\r\n"
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            for _ in range(64 * 1024 * 1024 // len(line)):  # past any socket buffers
                sock.sendall(line)
    _serving(w)


def test_post_form_of_many_empty_fields_is_max_post_pre_data_length_exceeded(
        w: dict[str, Any]) -> None:
    """Empty fields cost the 20 KB pre-data budget nothing, so a form could carry any number
    (x-ignore-* ones pass the policy); parsing 10,000 held a worker's event loop 6 s. Each
    part's head now counts."""
    form = w["s3"].generate_presigned_post(w["bucket"], "posted")
    fields = {**form["fields"], **{f"x-ignore-{i}": "" for i in range(5000)}}
    r = requests.post(form["url"], data=fields, files={"file": ("f", b"body")}, timeout=60)
    assert r.status_code == 400 and "<Code>MaxPostPreDataLengthExceeded</Code>" in r.text
    assert "<MaxPostPreDataLengthBytes>20480</MaxPostPreDataLengthBytes>" in r.text
    with pytest.raises(ClientError):
        w["s3"].head_object(Bucket=w["bucket"], Key="posted")
    few = {**form["fields"], **{f"x-ignore-{i}": "" for i in range(20)}}
    r = requests.post(form["url"], data=few, files={"file": ("f", b"body")}, timeout=60)
    assert r.status_code == 204  # an ordinary form still fits
    _serving(w)


DEEP = b"[" * 3000 + b"]" * 3000  # past Python's recursion limit for json.loads


def test_json_nested_past_the_recursion_limit_is_a_clear_400(w: dict[str, Any]) -> None:
    """json.loads raises RecursionError, not ValueError, for such a document: a bucket
    policy, an SSE-KMS encryption context, a POST form's policy and an unauthenticated
    console login answered 500."""
    s3, bucket = w["s3"], w["bucket"]
    with pytest.raises(ClientError) as exc:
        s3.put_bucket_policy(Bucket=bucket, Policy=DEEP.decode())
    assert exc.value.response["Error"]["Code"] == "MalformedPolicy"
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="ctx", Body=b"x", ServerSideEncryption="aws:kms",
                      SSEKMSEncryptionContext=base64.b64encode(DEEP).decode())
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    policy = base64.b64encode(DEEP).decode()
    secret = w["cluster"].env["AWS_SECRET_ACCESS_KEY"]
    signature = base64.b64encode(hmac.new(secret.encode(), policy.encode(),
                                          hashlib.sha1).digest()).decode()
    r = requests.post(f"{w['cluster'].endpoint}/{bucket}", timeout=60, files={"file": ("f", b"x")},
                      data={"key": "posted-deep", "policy": policy, "signature": signature,
                            "AWSAccessKeyId": w["cluster"].env["AWS_ACCESS_KEY_ID"]})
    assert r.status_code == 400 and "InternalError" not in r.text
    admin = f"http://127.0.0.1:{w['cluster'].admin_port}"
    r = requests.post(f"{admin}/console/api/login", data=DEEP, timeout=60,
                      headers={"Content-Type": "application/json", "Origin": admin})
    assert r.status_code == 400 and r.json()["error"]["code"] == "MalformedJSON"
    _serving(w)


def test_framing_broken_while_aiohttp_lingers_after_an_early_answer_logs_no_traceback(
        w: dict[str, Any]) -> None:
    """review18c: the gateway answers before reading the body (a PUT to a missing bucket,
    404 without 100 Continue), then the client's chunked framing breaks while aiohttp
    lingers over the unread body. No ERROR traceback quoting the client's bytes may follow
    (headguard's `_body_refused` put the error on a stream only aiohttp's linger reads;
    before it, aiohttp lingered and closed quietly)."""
    cluster = w["cluster"]
    log = cluster.data / "logs" / "gateway.log"
    mark = log.stat().st_size
    head = (f"PUT /nosuchbucket-linger/k HTTP/1.1\r\nHost: 127.0.0.1:{cluster.port}\r\n"
            "Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", cluster.port), timeout=60) as sock:
        sock.sendall(head)
        answer = b""
        while b"</Error>" not in answer:
            answer += sock.recv(65536)
        assert _code(answer) == (404, "NoSuchBucket"), answer[:300]
        sock.sendall(b"5\r\nhello\r\nzz\r\nabc\r\n0\r\n\r\n")
        _until_closed(sock)
    _serving(w)
    with open(log, "rb") as f:
        f.seek(mark)
        text = f.read().decode(errors="replace")
    assert "Traceback" not in text and '"aiohttp.server"' not in text


def test_a_whole_body_followed_by_an_unparsable_pipelined_head_is_still_stored(
        w: dict[str, Any]) -> None:
    """review18c: one socket read holds the end of a valid chunked body and a pipelined
    request head the parser refuses. The error is the next request's (its own 400); it was
    set on the finished body's stream, so the valid upload was answered 400 BadRequest."""
    cluster, s3 = w["cluster"], w["s3"]
    key = f"pipelined-{uuid.uuid4().hex[:8]}"
    url = s3.generate_presigned_url("put_object", Params={"Bucket": w["bucket"], "Key": key})
    target = url.split(f":{cluster.port}", 1)[1]
    head = (f"PUT {target} HTTP/1.1\r\nHost: 127.0.0.1:{cluster.port}\r\n"
            "Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n").encode()
    answer = _after_continue(cluster.port, head,
                             b"5\r\nhello\r\n0\r\n\r\nGET /\x01 HTTP/1.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert s3.get_object(Bucket=w["bucket"], Key=key)["Body"].read() == b"hello"
