"""Map an HTTP request line to the S3 operation it names, without touching a server.

`parse_endpoint` finds the bucket (from the host for virtual-hosted style, else from the first
path segment), the key (the rest of the path, percent-decoded, kept exactly: `//`, trailing
slashes and dots are part of a key), and the operation, named as AWS names it (`PutObject`,
`ListObjectsV2`, `GetBucketAcl`...). The operation comes from the resource level (service,
bucket or object), the subresource in the query (`?tagging`, `?uploads`...) and the method.
Operations we do not implement still get their AWS name, so the gateway can answer
`NotImplemented` or a canned default for them; a method a resource does not support is
`MethodNotAllowed`.

A literal `+` in the path is a plus sign, not a space (clients send spaces as `%20`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote

from gateway.s3.errors import S3Error
from storage.version_ids import well_formed_version_id

__all__ = ["KEY_BYTES_MAX", "NO_BUCKET_OPS", "PREFLIGHT", "VERSION_ID_OPS", "Endpoint", "check_version_id", "parse_endpoint",
           "validate_bucket_name"]

KEY_BYTES_MAX = 1024


@dataclass(frozen=True)
class Endpoint:
    """The operation a request names; `params` is the query string (first value per name)."""

    op: str
    bucket: str | None
    key: str | None
    params: Mapping[str, str] = field(default_factory=dict)
    virtual_host: bool = False


def _crud(name: str, *, delete: bool = True) -> dict[str, str]:
    ops = {"GET": f"Get{name}", "PUT": f"Put{name}"}
    if delete:
        ops["DELETE"] = f"Delete{name}"
    return ops


# Subresource -> method -> operation, in the order they are looked for in the query string.
_BUCKET_SUBRESOURCES: dict[str, dict[str, str]] = {
    "delete": {"POST": "DeleteObjects"},
    "uploads": {"GET": "ListMultipartUploads"},
    "versions": {"GET": "ListObjectVersions"},
    "location": {"GET": "GetBucketLocation"},
    "versioning": _crud("BucketVersioning", delete=False),
    "tagging": _crud("BucketTagging"),
    "cors": _crud("BucketCors"),
    "policy": _crud("BucketPolicy"),
    "policyStatus": {"GET": "GetBucketPolicyStatus"},
    "encryption": _crud("BucketEncryption"),
    "lifecycle": {
        "GET": "GetBucketLifecycleConfiguration",
        "PUT": "PutBucketLifecycleConfiguration",
        "DELETE": "DeleteBucketLifecycle",
    },
    "acl": _crud("BucketAcl", delete=False),
    "website": _crud("BucketWebsite"),
    "replication": _crud("BucketReplication"),
    "object-lock": _crud("ObjectLockConfiguration", delete=False),
    "notification": _crud("BucketNotificationConfiguration", delete=False),
    "logging": _crud("BucketLogging", delete=False),
    "accelerate": _crud("BucketAccelerateConfiguration", delete=False),
    "requestPayment": _crud("BucketRequestPayment", delete=False),
    "ownershipControls": _crud("BucketOwnershipControls"),
    "publicAccessBlock": _crud("PublicAccessBlock"),
    "analytics": _crud("BucketAnalyticsConfiguration"),
    "inventory": _crud("BucketInventoryConfiguration"),
    "metrics": _crud("BucketMetricsConfiguration"),
    "intelligent-tiering": _crud("BucketIntelligentTieringConfiguration"),
    "metadataTable": {
        "GET": "GetBucketMetadataTableConfiguration",
        "POST": "CreateBucketMetadataTableConfiguration",
        "DELETE": "DeleteBucketMetadataTableConfiguration",
    },
    "metadataConfiguration": {
        "GET": "GetBucketMetadataConfiguration",
        "POST": "CreateBucketMetadataConfiguration",
        "DELETE": "DeleteBucketMetadataConfiguration",
    },
    "metadataInventoryTable": {"PUT": "UpdateBucketMetadataInventoryTableConfiguration"},
    "metadataJournalTable": {"PUT": "UpdateBucketMetadataJournalTableConfiguration"},
    "abac": _crud("BucketAbac", delete=False),
    "session": {"GET": "CreateSession"},
}

# Configurations addressed by `id`; GET without one lists them all.
_LISTED_BY_ID = {
    "analytics": "ListBucketAnalyticsConfigurations",
    "inventory": "ListBucketInventoryConfigurations",
    "metrics": "ListBucketMetricsConfigurations",
    "intelligent-tiering": "ListBucketIntelligentTieringConfigurations",
}

_BUCKET_PLAIN = {
    "HEAD": "HeadBucket",
    "PUT": "CreateBucket",
    "DELETE": "DeleteBucket",
    "POST": "PostObject",
}

_OBJECT_SUBRESOURCES: dict[str, dict[str, str]] = {
    "uploadId": {
        "GET": "ListParts",
        "PUT": "UploadPart",
        "POST": "CompleteMultipartUpload",
        "DELETE": "AbortMultipartUpload",
    },
    "uploads": {"POST": "CreateMultipartUpload"},
    "tagging": _crud("ObjectTagging"),
    "acl": _crud("ObjectAcl", delete=False),
    "retention": _crud("ObjectRetention", delete=False),
    "legal-hold": _crud("ObjectLegalHold", delete=False),
    "restore": {"POST": "RestoreObject"},
    "attributes": {"GET": "GetObjectAttributes"},
    "torrent": {"GET": "GetObjectTorrent"},
    "select": {"POST": "SelectObjectContent"},
    # Last: a subresource above wins. Unrouted, these were a PutObject of the request's body
    # (an empty one for a rename), replacing the object they name.
    "renameObject": {"PUT": "RenameObject"},
    "encryption": {"PUT": "UpdateObjectEncryption"},
}

_OBJECT_PLAIN = {
    "GET": "GetObject",
    "HEAD": "HeadObject",
    "PUT": "PutObject",
    "DELETE": "DeleteObject",
}

# The operations AWS documents `?versionId=` on; any other ignores the parameter.
VERSION_ID_OPS = frozenset({
    "GetObject", "HeadObject", "DeleteObject", "GetObjectAcl", "PutObjectAcl",
    "GetObjectTagging", "PutObjectTagging", "DeleteObjectTagging", "GetObjectAttributes",
    "GetObjectRetention", "PutObjectRetention", "GetObjectLegalHold", "PutObjectLegalHold",
    "RestoreObject",
})
PREFLIGHT = "PreflightRequest"  # CORS OPTIONS; not an AWS operation but routed like one
NO_BUCKET_OPS = frozenset({"ListBuckets", "CreateBucket"})  # they name no existing bucket


def parse_endpoint(
    method: str,
    path: str,
    query: Mapping[str, str],
    host: str,
    virtual_host_domain: str | None,
    *,
    has_copy_source: bool = False,
) -> Endpoint:
    """Route one request; `path` is the raw (still percent-encoded) path."""
    method = method.upper()
    path = path.split("?", 1)[0]
    if not path.startswith("/"):
        raise S3Error("InvalidURI")
    params = dict(query)
    bucket = _virtual_host_bucket(host, virtual_host_domain)
    virtual = bucket is not None
    if virtual:
        raw_key = path[1:]
    else:
        raw_bucket, _, raw_key = path[1:].partition("/")
        bucket = _decode(raw_bucket) if raw_bucket else None
        if bucket is None and raw_key:
            raise S3Error("InvalidBucketName", BucketName="")
    key = _decode(raw_key) if raw_key else None
    key_bytes = len(key.encode("utf-8")) if key is not None else 0
    if key_bytes > KEY_BYTES_MAX:
        raise S3Error("KeyTooLongError", Size=str(key_bytes), MaxSizeAllowed=str(KEY_BYTES_MAX))
    op = _operation(method, bucket, key, params, has_copy_source)
    return Endpoint(op=op, bucket=bucket, key=key, params=params, virtual_host=virtual)


def unrouted_endpoint(method: str, path: str, host: str, virtual_host_domain: str | None,
                      ) -> Endpoint | None:
    """For a request `parse_endpoint` refused (a method no resource takes, a key too long, a
    bad encoding): the bucket and key it names as far as they can be read, op `Unknown`, so
    the access log of a logged bucket still records it (None if it names no bucket)."""
    path = path.split("?", 1)[0]
    bucket = _virtual_host_bucket(host, virtual_host_domain)
    raw_key = path[1:]
    if bucket is None:
        raw_bucket, _, raw_key = path[1:].partition("/")
        bucket = unquote(raw_bucket, errors="replace") if raw_bucket else None
    if not bucket:
        return None
    key = unquote(raw_key, errors="replace") if raw_key else None
    return Endpoint(op="Unknown", bucket=bucket, key=key)


def _virtual_host_bucket(host: str, domain: str | None) -> str | None:
    if not domain:
        return None
    host = host.strip().lower()
    if host.startswith("["):  # IPv6 literal, never a virtual host
        return None
    host = host.rsplit(":", 1)[0] if ":" in host else host
    suffix = "." + domain.lower().strip(".")
    if host.endswith(suffix) and len(host) > len(suffix):
        return host[: -len(suffix)]
    return None


def _decode(raw: str) -> str:
    try:
        return unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise S3Error("InvalidURI") from None


def _not_allowed(method: str, resource_type: str) -> S3Error:
    return S3Error("MethodNotAllowed", Method=method, ResourceType=resource_type)


def _operation(
    method: str,
    bucket: str | None,
    key: str | None,
    params: Mapping[str, str],
    has_copy_source: bool,
) -> str:
    if method == "OPTIONS":
        return PREFLIGHT
    if bucket is None:
        if method == "GET":
            return "ListBuckets"
        raise _not_allowed(method, "SERVICE")
    if key is None:
        return _bucket_operation(method, params)
    return _object_operation(method, params, has_copy_source)


def _bucket_operation(method: str, params: Mapping[str, str]) -> str:
    for name, ops in _BUCKET_SUBRESOURCES.items():
        if name not in params:
            continue
        if method == "GET" and name in _LISTED_BY_ID and "id" not in params:
            return _LISTED_BY_ID[name]
        if method not in ops:
            raise _not_allowed(method, "BUCKET")
        return ops[method]
    if method == "GET":
        return "ListObjectsV2" if params.get("list-type") == "2" else "ListObjects"
    if method not in _BUCKET_PLAIN:
        raise _not_allowed(method, "BUCKET")
    return _BUCKET_PLAIN[method]


def _object_operation(method: str, params: Mapping[str, str], has_copy_source: bool) -> str:
    for name, ops in _OBJECT_SUBRESOURCES.items():
        if name not in params:
            continue
        if method not in ops:
            raise _not_allowed(method, "OBJECT")
        op = ops[method]
        if op == "UploadPart":
            if "partNumber" not in params:
                raise S3Error(
                    "InvalidArgument",
                    "Part number must be an integer between 1 and 10000, inclusive",
                    ArgumentName="partNumber",
                    ArgumentValue="",
                )
            return "UploadPartCopy" if has_copy_source else op
        return op
    if method == "PUT" and has_copy_source:
        return "CopyObject"
    if method not in _OBJECT_PLAIN:
        raise _not_allowed(method, "OBJECT")
    return _OBJECT_PLAIN[method]


# --- bucket names --------------------------------------------------------------------------

_BUCKET_CHARS = re.compile(r"[a-z0-9][a-z0-9.-]*[a-z0-9]")
_IP_LIKE = re.compile(r"\d+\.\d+\.\d+\.\d+")
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


def validate_bucket_name(name: str) -> None:
    """Raise `InvalidBucketName` unless `name` follows AWS's general-purpose bucket rules."""
    valid = (
        3 <= len(name) <= 63
        and _BUCKET_CHARS.fullmatch(name) is not None
        and ".." not in name
        and ".-" not in name
        and "-." not in name
        and _IP_LIKE.fullmatch(name) is None
        and not name.startswith(_RESERVED_PREFIXES)
        and not name.endswith(_RESERVED_SUFFIXES)
    )
    if not valid:
        raise S3Error("InvalidBucketName", BucketName=name)


def check_version_id(version_id: str, argument: str = "versionId") -> None:
    """A version id named by a request (`?versionId=`, a copy source's, a listing's
    `version-id-marker` given as `argument`): S3 answers an empty or malformed one 400
    InvalidArgument, before looking for the version."""
    if version_id == "":
        raise S3Error("InvalidArgument", "Version id cannot be the empty string",
                      ArgumentName=argument, ArgumentValue="")
    if not well_formed_version_id(version_id):
        raise S3Error("InvalidArgument", "Invalid version id specified",
                      ArgumentName=argument, ArgumentValue=version_id)
