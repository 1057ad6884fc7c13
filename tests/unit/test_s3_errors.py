"""S3 error table, S3Error construction and the `<Error>` body, read back by botocore."""

from __future__ import annotations

from xml.etree import ElementTree as ET

import botocore.session
import pytest
from botocore.parsers import RestXMLParser

from gateway.s3.errors import ERRORS, S3Error, error_xml

# (code, status) pairs AWS documents and the gateway relies on.
EXPECTED_STATUS = [
    ("AccessDenied", 403),
    ("AccountProblem", 403),
    ("AuthorizationHeaderMalformed", 400),
    ("BadDigest", 400),
    ("BucketAlreadyExists", 409),
    ("BucketAlreadyOwnedByYou", 409),
    ("BucketNotEmpty", 409),
    ("ConditionalRequestConflict", 409),
    ("EntityTooLarge", 400),
    ("EntityTooSmall", 400),
    ("IncompleteBody", 400),
    ("InternalError", 500),
    ("InvalidAccessKeyId", 403),
    ("InvalidArgument", 400),
    ("InvalidBucketName", 400),
    ("InvalidBucketState", 409),
    ("InvalidDigest", 400),
    ("InvalidLocationConstraint", 400),
    ("InvalidObjectState", 403),
    ("InvalidPart", 400),
    ("InvalidPartOrder", 400),
    ("InvalidRange", 416),
    ("InvalidRequest", 400),
    ("InvalidStorageClass", 400),
    ("InvalidTag", 400),
    ("KeyTooLongError", 400),
    ("MalformedPolicy", 400),
    ("MalformedXML", 400),
    ("MetadataTooLarge", 400),
    ("MethodNotAllowed", 405),
    ("MissingContentLength", 411),
    ("MissingSecurityHeader", 400),
    ("NoSuchBucket", 404),
    ("NoSuchBucketPolicy", 404),
    ("NoSuchCORSConfiguration", 404),
    ("NoSuchKey", 404),
    ("NoSuchLifecycleConfiguration", 404),
    ("NoSuchObjectLockConfiguration", 404),
    ("NoSuchTagSet", 404),
    ("NoSuchUpload", 404),
    ("NoSuchVersion", 404),
    ("NotImplemented", 501),
    ("NotModified", 304),
    ("OwnershipControlsNotFoundError", 404),
    ("PreconditionFailed", 412),
    ("RequestTimeTooSkewed", 403),
    ("RequestTimeout", 400),
    ("RestoreAlreadyInProgress", 409),
    ("ServerSideEncryptionConfigurationNotFoundError", 404),
    ("ServiceUnavailable", 503),
    ("SignatureDoesNotMatch", 403),
    ("SlowDown", 503),
    ("TooManyBuckets", 400),
    ("XAmzContentSHA256Mismatch", 400),
]

_S3_MODEL = botocore.session.get_session().get_service_model("s3")


@pytest.mark.parametrize(("code", "status"), EXPECTED_STATUS)
def test_table_status(code: str, status: int) -> None:
    assert ERRORS[code][0] == status
    err = S3Error(code)
    assert (err.code, err.status, err.message) == (code, status, ERRORS[code][1])


def test_table_messages_are_sentences() -> None:
    for code, (status, message) in ERRORS.items():
        assert 300 <= status <= 599, code
        assert message and message == message.strip(), code


def test_overrides_and_fields() -> None:
    err = S3Error(
        "InvalidArgument",
        "Bad max-keys",
        resource="/b",
        headers={"x-amz-delete-marker": "true"},
        ArgumentName="max-keys",
        ArgumentValue="-1",
    )
    assert err.status == 400
    assert err.message == "Bad max-keys"
    assert err.extra == {"ArgumentName": "max-keys", "ArgumentValue": "-1"}
    assert err.headers == {"x-amz-delete-marker": "true"}
    assert str(err) == "InvalidArgument: Bad max-keys"
    assert S3Error("NoSuchKey", status=418).status == 418


def test_unknown_code_needs_status() -> None:
    with pytest.raises(ValueError):
        S3Error("SomethingNew")
    err = S3Error("SomethingNew", status=400)
    assert (err.status, err.message) == (400, "SomethingNew")


def test_error_xml_golden() -> None:
    err = S3Error("NoSuchKey", resource="/bkt/a&b.txt", Key="a&b.txt")
    assert error_xml(err, "4442587FB7D0A2F9", "host/id+=") == (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b"<Error><Code>NoSuchKey</Code>"
        b"<Message>The specified key does not exist.</Message>"
        b"<Key>a&amp;b.txt</Key>"
        b"<Resource>/bkt/a&amp;b.txt</Resource>"
        b"<RequestId>4442587FB7D0A2F9</RequestId>"
        b"<HostId>host/id+=</HostId></Error>"
    )


def test_error_xml_without_resource_keeps_extra_order() -> None:
    err = S3Error("NoSuchBucket", BucketName="b")
    body = error_xml(err, "R", "H").decode()
    assert body.endswith(
        "<Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message>"
        "<BucketName>b</BucketName><RequestId>R</RequestId><HostId>H</HostId></Error>"
    )


def test_not_modified_has_no_body() -> None:
    err = S3Error("NotModified")
    assert not err.has_body
    assert error_xml(err, "R", "H") == b""


def test_carriage_return_is_a_reference() -> None:
    body = error_xml(S3Error("NoSuchKey", Key="a\rb"), "R", "H")
    assert b"<Key>a&#xD;b</Key>" in body


def test_names_xml_cannot_carry_are_left_out() -> None:
    """`&#x1;` is not well-formed XML 1.0: the element goes, the document stays parseable."""
    body = error_xml(S3Error("NoSuchKey", Key="a\x00b\x01c"), "R", "H")
    assert b"<Key>" not in body and b"&#x" not in body
    ET.fromstring(body)


def test_botocore_reads_error() -> None:
    err = S3Error("NoSuchKey", resource="/b/k", Key="k")
    body = error_xml(err, "REQ1", "HOST1")
    shape = _S3_MODEL.operation_model("GetObject").output_shape
    headers = {"x-amz-request-id": "REQ1", "x-amz-id-2": "HOST1"}
    parsed = RestXMLParser().parse({"body": body, "headers": headers, "status_code": 404}, shape)
    assert parsed["Error"] == {
        "Code": "NoSuchKey",
        "Message": "The specified key does not exist.",
        "Key": "k",
        "Resource": "/b/k",
    }
    assert parsed["ResponseMetadata"]["RequestId"] == "REQ1"
    assert parsed["ResponseMetadata"]["HostId"] == "HOST1"


@pytest.mark.parametrize("exc", [
    pytest.param("aead", id="no-k-shards-authenticate"),
    pytest.param("shard", id="shard-corrupt"),
])
def test_data_that_fails_verification_is_a_503_not_an_internal_error(
        exc: str, caplog: pytest.LogCaptureFixture) -> None:
    """A segment no k shards authenticate is unavailable (503, retried by SDKs), as too few
    readable shards are: not a 500 InternalError with a traceback in the log (review9b)."""
    from gateway.s3.errors_map import to_s3_error
    from storage.errors import IntegrityError, ShardCorrupt
    e = IntegrityError("segment 3 failed authentication") if exc == "aead" \
        else ShardCorrupt("ab-1", "crc")
    err = to_s3_error(e, "b", "k")
    assert (err.code, err.status) == ("ServiceUnavailable", 503)
    assert not any(r.exc_info for r in caplog.records)


@pytest.mark.parametrize("full", [True, False], ids=["full", "not-full"])
def test_a_write_refused_by_full_nodes_says_storage_is_full(full: bool) -> None:
    """Nodes that answer but have no room: the 503 says the storage is full, not that too
    few nodes are reachable (it said so while the log said out of space). The writer
    decides which (`storage.fullness`); the causes' text does not (the same here)."""
    from gateway.s3.errors_map import STORAGE_FULL, to_s3_error
    from storage.errors import QuorumNotReached
    causes = ["node n1: PUT 507 no space left on the node's disk"] * 6
    err = to_s3_error(QuorumNotReached(5, 0, 6, causes, full=full), "b", "k")
    assert (err.code, err.status) == ("ServiceUnavailable", 503)
    assert (err.message == STORAGE_FULL) is full, err.message
