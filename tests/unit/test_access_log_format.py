"""Server access log lines: AWS's 26 fields, quoting, and AWS's operation names."""

from __future__ import annotations

import shlex

from gateway.s3.access_log import logged_target, operation_name
from storage.accesslog import AccessRecord, format_line
from storage.workers.accesslog import log_object_key


def _record(**kw: object) -> AccessRecord:
    base: dict[str, object] = dict(
        bucket="src", time=1_700_000_000.5, remote_ip="192.0.2.3", requester="-",
        request_id="3E57427F3EXAMPLE", operation="REST.GET.OBJECT", key="a%20b",
        request_uri="GET /src/a%20b HTTP/1.1", status=200, error_code="", bytes_sent=0,
        object_size=None, total_ms=7, turnaround_ms=None, referer="",
        user_agent='agent "quoted" \\ slash', version_id="-", host_id="tessera",
        signature_version="SigV4", cipher_suite="-", auth_type="AuthHeader",
        host_header="s3.local:9000", tls_version="-", access_point_arn="-",
        acl_required=False)
    base.update(kw)
    return AccessRecord(**base)  # type: ignore[arg-type]


def test_line_has_aws_fields_in_order() -> None:
    line = format_line(_record(), "owner-id")
    assert line.startswith("owner-id src [14/Nov/2023:22:13:20 +0000] 192.0.2.3 - ")
    f = shlex.split(line.replace("[", '"').replace("]", '"'))
    assert len(f) == 26
    assert f[6:12] == ["REST.GET.OBJECT", "a%20b", "GET /src/a%20b HTTP/1.1", "200", "-", "-"]
    assert f[12:16] == ["-", "7", "-", "-"]  # object size, total, turn-around, referer
    assert f[16] == 'agent "quoted" \\ slash'
    assert f[19:] == ["SigV4", "-", "AuthHeader", "s3.local:9000", "-", "-", "-"]
    f = shlex.split(format_line(_record(acl_required=True, bytes_sent=5, object_size=5,
                                        error_code="NoSuchKey", key="sp ace"), "o")
                    .replace("[", '"').replace("]", '"'))
    assert (f[7], f[10], f[11], f[12], f[25]) == ("sp%20ace", "NoSuchKey", "5", "5", "Yes")


def test_operation_names_as_aws_logs_them() -> None:
    assert operation_name("PutObject", "PUT") == "REST.PUT.OBJECT"
    assert operation_name("ListObjectsV2", "GET") == "REST.GET.BUCKET"
    assert operation_name("CopyObject", "PUT") == "REST.COPY.OBJECT"
    assert operation_name("UploadPartCopy", "PUT") == "REST.COPY.PART"
    assert operation_name("DeleteObjects", "POST") == "REST.POST.MULTI_OBJECT_DELETE"
    assert operation_name("CompleteMultipartUpload", "POST") == "REST.POST.UPLOAD"
    assert operation_name("GetBucketLogging", "GET") == "REST.GET.LOGGING_STATUS"
    assert operation_name("PutBucketOwnershipControls", "PUT") == \
        "REST.PUT.OWNERSHIP_CONTROLS"


def test_log_object_keys() -> None:
    conf = {"target_prefix": "log/"}
    assert log_object_key(conf, 1_700_000_000, 0, "o", "r", "b", "ABC") == \
        "log/2023-11-14-22-13-20-ABC"
    part = {"target_prefix": "", "key_format": "partitioned", "date_source": "EventTime"}
    assert log_object_key(part, 1_700_000_000, 1_600_000_000, "o", "us-east-1", "b", "X") == \
        "o/us-east-1/b/2020/09/13/2023-11-14-22-13-20-X"


def test_query_string_signatures_are_withheld_from_the_logged_target() -> None:
    """A presigned URL's signature replays until it expires: the log keeps every other part."""
    v4 = ("/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AK%2F20261207%2Fus-east-1"
          "%2Fs3%2Faws4_request&X-Amz-Date=20261207T000000Z&X-Amz-Expires=60"
          "&X-Amz-SignedHeaders=host&X-Amz-Signature=" + "ab" * 32 + "&x-user=me")
    assert logged_target(v4) == v4.replace("ab" * 32, "REDACTED")
    v2 = "/b/k?AWSAccessKeyId=AK&Expires=1796674791&Signature=3LtgrFtv%2BCRZ%3D"
    assert logged_target(v2) == "/b/k?AWSAccessKeyId=AK&Expires=1796674791&Signature=REDACTED"
    # the query parser decodes names, so these are the same parameters to the gateway
    assert logged_target("/b?X-Amz-Signatur%65=ff&x-amz-signature=ee&SIGNATURE=dd") == \
        "/b?X-Amz-Signatur%65=REDACTED&x-amz-signature=REDACTED&SIGNATURE=REDACTED"
    for plain in ("/b/k", "/b?list-type=2&prefix=dir%2F", "/b?Signatures=1&signature",
                  "/b/Signature=x"):
        assert logged_target(plain) == plain
