"""Table tests for the S3 router: (method, path, query, host) -> operation, bucket, key."""

from __future__ import annotations

import botocore.session
import pytest

from gateway.s3.errors import S3Error
from gateway.s3.router import Endpoint, parse_endpoint, validate_bucket_name

DOMAIN = "s3.example.com"
PATH_HOST = "s3.example.com:9000"


def _query(text: str) -> dict[str, str]:
    """'a=1&b' -> {'a': '1', 'b': ''} (values are already decoded in these tables)."""
    pairs = (item.partition("=") for item in text.split("&") if item)
    return {name: value for name, _, value in pairs}


# method, path, query, expected op, bucket, key
PATH_STYLE = [
    ("GET", "/", "", "ListBuckets", None, None),
    ("GET", "/", "prefix=a&max-buckets=10", "ListBuckets", None, None),
    ("PUT", "/b", "", "CreateBucket", "b", None),
    ("PUT", "/b/", "", "CreateBucket", "b", None),
    ("DELETE", "/b", "", "DeleteBucket", "b", None),
    ("HEAD", "/b", "", "HeadBucket", "b", None),
    ("GET", "/b", "", "ListObjects", "b", None),
    ("GET", "/b", "prefix=x&delimiter=/&marker=m", "ListObjects", "b", None),
    ("GET", "/b", "list-type=2&prefix=x", "ListObjectsV2", "b", None),
    ("GET", "/b", "versions&prefix=x", "ListObjectVersions", "b", None),
    ("GET", "/b", "location", "GetBucketLocation", "b", None),
    ("GET", "/b", "versioning", "GetBucketVersioning", "b", None),
    ("PUT", "/b", "versioning", "PutBucketVersioning", "b", None),
    ("GET", "/b", "tagging", "GetBucketTagging", "b", None),
    ("PUT", "/b", "tagging", "PutBucketTagging", "b", None),
    ("DELETE", "/b", "tagging", "DeleteBucketTagging", "b", None),
    ("GET", "/b", "cors", "GetBucketCors", "b", None),
    ("PUT", "/b", "cors", "PutBucketCors", "b", None),
    ("DELETE", "/b", "cors", "DeleteBucketCors", "b", None),
    ("GET", "/b", "policy", "GetBucketPolicy", "b", None),
    ("PUT", "/b", "policy", "PutBucketPolicy", "b", None),
    ("DELETE", "/b", "policy", "DeleteBucketPolicy", "b", None),
    ("GET", "/b", "policyStatus", "GetBucketPolicyStatus", "b", None),
    ("GET", "/b", "encryption", "GetBucketEncryption", "b", None),
    ("PUT", "/b", "encryption", "PutBucketEncryption", "b", None),
    ("DELETE", "/b", "encryption", "DeleteBucketEncryption", "b", None),
    ("GET", "/b", "lifecycle", "GetBucketLifecycleConfiguration", "b", None),
    ("PUT", "/b", "lifecycle", "PutBucketLifecycleConfiguration", "b", None),
    ("DELETE", "/b", "lifecycle", "DeleteBucketLifecycle", "b", None),
    ("GET", "/b", "uploads", "ListMultipartUploads", "b", None),
    ("GET", "/b", "uploads&prefix=a&key-marker=k", "ListMultipartUploads", "b", None),
    ("POST", "/b", "delete", "DeleteObjects", "b", None),
    ("POST", "/b", "", "PostObject", "b", None),
    ("GET", "/b", "acl", "GetBucketAcl", "b", None),
    ("PUT", "/b", "acl", "PutBucketAcl", "b", None),
    ("GET", "/b", "website", "GetBucketWebsite", "b", None),
    ("DELETE", "/b", "website", "DeleteBucketWebsite", "b", None),
    ("GET", "/b", "replication", "GetBucketReplication", "b", None),
    ("GET", "/b", "object-lock", "GetObjectLockConfiguration", "b", None),
    ("PUT", "/b", "object-lock", "PutObjectLockConfiguration", "b", None),
    ("GET", "/b", "notification", "GetBucketNotificationConfiguration", "b", None),
    ("PUT", "/b", "notification", "PutBucketNotificationConfiguration", "b", None),
    ("GET", "/b", "logging", "GetBucketLogging", "b", None),
    ("GET", "/b", "accelerate", "GetBucketAccelerateConfiguration", "b", None),
    ("GET", "/b", "requestPayment", "GetBucketRequestPayment", "b", None),
    ("GET", "/b", "ownershipControls", "GetBucketOwnershipControls", "b", None),
    ("DELETE", "/b", "ownershipControls", "DeleteBucketOwnershipControls", "b", None),
    ("GET", "/b", "publicAccessBlock", "GetPublicAccessBlock", "b", None),
    ("PUT", "/b", "publicAccessBlock", "PutPublicAccessBlock", "b", None),
    ("GET", "/b", "analytics", "ListBucketAnalyticsConfigurations", "b", None),
    ("GET", "/b", "analytics&id=a1", "GetBucketAnalyticsConfiguration", "b", None),
    ("PUT", "/b", "analytics&id=a1", "PutBucketAnalyticsConfiguration", "b", None),
    ("GET", "/b", "inventory", "ListBucketInventoryConfigurations", "b", None),
    ("GET", "/b", "metrics&id=m", "GetBucketMetricsConfiguration", "b", None),
    ("GET", "/b", "intelligent-tiering", "ListBucketIntelligentTieringConfigurations", "b", None),
    ("OPTIONS", "/b", "", "PreflightRequest", "b", None),
    # objects
    ("PUT", "/b/k", "", "PutObject", "b", "k"),
    ("GET", "/b/k", "", "GetObject", "b", "k"),
    ("GET", "/b/k", "versionId=v1&partNumber=2", "GetObject", "b", "k"),
    ("HEAD", "/b/k", "", "HeadObject", "b", "k"),
    ("DELETE", "/b/k", "versionId=v1", "DeleteObject", "b", "k"),
    ("GET", "/b/k", "tagging", "GetObjectTagging", "b", "k"),
    ("PUT", "/b/k", "tagging&versionId=v", "PutObjectTagging", "b", "k"),
    ("DELETE", "/b/k", "tagging", "DeleteObjectTagging", "b", "k"),
    ("POST", "/b/k", "uploads", "CreateMultipartUpload", "b", "k"),
    ("PUT", "/b/k", "partNumber=1&uploadId=u", "UploadPart", "b", "k"),
    ("POST", "/b/k", "uploadId=u", "CompleteMultipartUpload", "b", "k"),
    ("DELETE", "/b/k", "uploadId=u", "AbortMultipartUpload", "b", "k"),
    ("GET", "/b/k", "uploadId=u&max-parts=10", "ListParts", "b", "k"),
    ("POST", "/b/k", "restore", "RestoreObject", "b", "k"),
    ("POST", "/b/k", "restore&versionId=v", "RestoreObject", "b", "k"),
    ("GET", "/b/k", "attributes", "GetObjectAttributes", "b", "k"),
    ("GET", "/b/k", "acl", "GetObjectAcl", "b", "k"),
    ("PUT", "/b/k", "retention", "PutObjectRetention", "b", "k"),
    ("GET", "/b/k", "legal-hold", "GetObjectLegalHold", "b", "k"),
    ("GET", "/b/k", "torrent", "GetObjectTorrent", "b", "k"),
    ("POST", "/b/k", "select&select-type=2", "SelectObjectContent", "b", "k"),
    ("OPTIONS", "/b/k", "", "PreflightRequest", "b", "k"),
    # keys are kept exactly
    ("GET", "/b/a/b/c", "", "GetObject", "b", "a/b/c"),
    ("GET", "/b/dir/", "", "GetObject", "b", "dir/"),
    ("GET", "/b//lead", "", "GetObject", "b", "/lead"),
    ("GET", "/b/a//b", "", "GetObject", "b", "a//b"),
    ("GET", "/b/./..", "", "GetObject", "b", "./.."),
    ("GET", "/b/a%20b%2Bc+d", "", "GetObject", "b", "a b+c+d"),
    ("GET", "/b/%C3%A9t%C3%A9", "", "GetObject", "b", "été"),
    ("GET", "/b/a%2Fb%3Fc%23d", "", "GetObject", "b", "a/b?c#d"),
    ("GET", "/b/%0A%00", "", "GetObject", "b", "\n\x00"),
    ("GET", "/b/k?ignored=1", "", "GetObject", "b", "k"),
    ("GET", "/My.Bucket/k", "", "GetObject", "My.Bucket", "k"),
]


@pytest.mark.parametrize(("method", "path", "query", "op", "bucket", "key"), PATH_STYLE)
def test_path_style(
    method: str, path: str, query: str, op: str, bucket: str | None, key: str | None
) -> None:
    ep = parse_endpoint(method, path, _query(query), PATH_HOST, DOMAIN)
    assert (ep.op, ep.bucket, ep.key, ep.virtual_host) == (op, bucket, key, False)
    assert ep.params == _query(query)


# method, path, query, host, op, bucket, key
VIRTUAL_HOSTED = [
    ("GET", "/", "", "b.s3.example.com", "ListObjects", "b", None),
    ("GET", "/", "list-type=2", "b.s3.example.com:9000", "ListObjectsV2", "b", None),
    ("PUT", "/", "", "My.Dotted.Bucket.S3.Example.com", "CreateBucket", "my.dotted.bucket", None),
    ("PUT", "/k/x", "", "b.s3.example.com", "PutObject", "b", "k/x"),
    ("GET", "//k", "", "b.s3.example.com", "GetObject", "b", "/k"),
    ("GET", "/b2/k", "", "b.s3.example.com", "GetObject", "b", "b2/k"),
    ("POST", "/", "delete", "b.s3.example.com", "DeleteObjects", "b", None),
]


@pytest.mark.parametrize(("method", "path", "query", "host", "op", "bucket", "key"), VIRTUAL_HOSTED)
def test_virtual_hosted_style(
    method: str, path: str, query: str, host: str, op: str, bucket: str, key: str | None
) -> None:
    ep = parse_endpoint(method, path, _query(query), host, DOMAIN)
    assert (ep.op, ep.bucket, ep.key, ep.virtual_host) == (op, bucket, key, True)


@pytest.mark.parametrize(
    ("host", "domain"),
    [
        ("s3.example.com", DOMAIN),  # the domain itself is path-style
        ("s3.example.com:9000", DOMAIN),
        ("127.0.0.1:9000", DOMAIN),
        ("[::1]:9000", DOMAIN),
        ("b.s3.example.com", None),  # virtual hosting off
        ("b.other.com", DOMAIN),
        ("xs3.example.com", DOMAIN),  # suffix must start at a dot
    ],
)
def test_hosts_that_are_path_style(host: str, domain: str | None) -> None:
    ep = parse_endpoint("GET", "/bkt/key", {}, host, domain)
    assert (ep.op, ep.bucket, ep.key, ep.virtual_host) == ("GetObject", "bkt", "key", False)


def test_copy_source_selects_copy_operations() -> None:
    def op(query: dict[str, str]) -> str:
        return parse_endpoint("PUT", "/b/k", query, PATH_HOST, DOMAIN, has_copy_source=True).op

    assert op({}) == "CopyObject"
    assert op({"partNumber": "1", "uploadId": "u"}) == "UploadPartCopy"
    assert op({"tagging": ""}) == "PutObjectTagging"


# method, path, query, error code
ERRORS = [
    ("PUT", "/", "", "MethodNotAllowed"),
    ("DELETE", "/", "", "MethodNotAllowed"),
    ("PATCH", "/b", "", "MethodNotAllowed"),
    ("POST", "/b", "versioning", "MethodNotAllowed"),
    ("DELETE", "/b", "versioning", "MethodNotAllowed"),
    ("GET", "/b", "delete", "MethodNotAllowed"),
    ("PUT", "/b", "location", "MethodNotAllowed"),
    ("HEAD", "/b", "tagging", "MethodNotAllowed"),
    ("POST", "/b/k", "", "MethodNotAllowed"),
    ("GET", "/b/k", "uploads", "MethodNotAllowed"),
    ("HEAD", "/b/k", "uploadId=u", "MethodNotAllowed"),
    ("GET", "/b/k", "restore", "MethodNotAllowed"),
    ("PUT", "/b/k", "uploadId=u", "InvalidArgument"),
    ("GET", "/b/" + "k" * 1025, "", "KeyTooLongError"),
    ("GET", "/b/" + "%C3%A9" * 513, "", "KeyTooLongError"),
    ("GET", "/b/%FF", "", "InvalidURI"),
    ("GET", "//k", "", "InvalidBucketName"),
    ("GET", "b/k", "", "InvalidURI"),
]


@pytest.mark.parametrize(("method", "path", "query", "code"), ERRORS)
def test_errors(method: str, path: str, query: str, code: str) -> None:
    with pytest.raises(S3Error) as info:
        parse_endpoint(method, path, _query(query), PATH_HOST, DOMAIN)
    assert info.value.code == code


def test_method_not_allowed_names_method_and_resource() -> None:
    with pytest.raises(S3Error) as info:
        parse_endpoint("POST", "/b/k", {}, PATH_HOST, DOMAIN)
    assert info.value.status == 405
    assert info.value.extra == {"Method": "POST", "ResourceType": "OBJECT"}


def test_key_of_exactly_1024_bytes_is_allowed() -> None:
    ep = parse_endpoint("PUT", "/b/" + "%C3%A9" * 512, {}, PATH_HOST, DOMAIN)
    assert ep.key == "é" * 512
    assert ep == Endpoint("PutObject", "b", "é" * 512, {})


@pytest.mark.parametrize(
    "name",
    [
        "abc",
        "a" * 63,
        "my-bucket.example",
        "1bucket",
        "bucket1",
        "a.b-c",
        "192.168.5.4x",
        "xn-single-dash",
    ],
)
def test_valid_bucket_names(name: str) -> None:
    validate_bucket_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "ab",
        "a" * 64,
        "MyBucket",
        "my_bucket",
        "-bucket",
        "bucket-",
        ".bucket",
        "bucket.",
        "my..bucket",
        "my.-bucket",
        "my-.bucket",
        "192.168.5.4",
        "xn--bucket",
        "sthree-bucket",
        "amzn-s3-demo-bucket",
        "bucket-s3alias",
        "bucket--ol-s3",
        "bucket.mrap",
        "bucket--x-s3",
        "bucket--table-s3",
        "buck et",
        "bücket",
    ],
)
def test_invalid_bucket_names(name: str) -> None:
    with pytest.raises(S3Error) as info:
        validate_bucket_name(name)
    assert info.value.code == "InvalidBucketName"
    assert info.value.extra == {"BucketName": name}


# --- every operation botocore's S3 model names is routed to that name --------------------

_S3_MODEL = botocore.session.get_session().get_service_model("s3")
# Older names of one request, answered as the current operation AWS answers it with.
_ALIASES = {"GetBucketLifecycle": "GetBucketLifecycleConfiguration",
            "PutBucketLifecycle": "PutBucketLifecycleConfiguration",
            "GetBucketNotification": "GetBucketNotificationConfiguration",
            "PutBucketNotification": "PutBucketNotificationConfiguration",
            "ListDirectoryBuckets": "ListBuckets"}
_OTHER_ENDPOINT = {"WriteGetObjectResponse"}  # S3 Object Lambda's own host, not a bucket


def _model_request(op: str) -> tuple[str, str, dict[str, str], bool]:
    """The method, path, query and copy-source flag botocore sends for `op` (required query
    members given a placeholder value)."""
    model = _S3_MODEL.operation_model(op)
    path, _, fixed = model.http["requestUri"].partition("?")
    path = path.replace("{Bucket}", "b").replace("{Key+}", "k")
    query = _query(fixed)
    shape = model.input_shape
    for name in shape.required_members:
        member = shape.members[name]
        if member.serialization.get("location") == "querystring":
            query[member.serialization["name"]] = "1"
    copy = "x-amz-copy-source" in {m.serialization.get("name") for m in shape.members.values()}
    return model.http["method"], path, query, copy


@pytest.mark.parametrize("op", sorted(set(_S3_MODEL.operation_names) - _OTHER_ENDPOINT))
def test_every_modelled_operation_is_routed_to_its_name(op: str) -> None:
    """A subresource the router does not know falls through to the plain operation of its
    method: `PUT /b/k?renameObject` or `?encryption` was a PutObject replacing the object
    with the request's body. Every operation must be routed to itself, so one the gateway
    does not implement is answered 501 NotImplemented, never run as another."""
    method, path, query, copy = _model_request(op)
    ep = parse_endpoint(method, path, query, PATH_HOST, DOMAIN, has_copy_source=copy)
    assert ep.op == _ALIASES.get(op, op)
