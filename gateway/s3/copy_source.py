"""`x-amz-copy-source`: the one reading of the header that CopyObject, UploadPartCopy and
the access log (the copy's record in its source bucket) share.

The value is `[/]bucket/key[?versionId=id]` with the path part URL-encoded: it is split at
the first raw '?', then percent-decoded as UTF-8 ('%2F' is a '/' of the key, '%3F' a '?'
of it, and '+' stays a literal plus, as botocore sends it encoded `%2B`), and one leading
'/' is dropped.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from gateway.s3.errors import S3Error
from gateway.s3.router import check_version_id

HEADER = "x-amz-copy-source"
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")  # a '%' not followed by two hex digits


def split_copy_source(value: str) -> tuple[str, str, str]:
    """(bucket, key, query) of the header, unchecked: the path decoded, the query as sent."""
    path, _, query = value.partition("?")
    path = unquote(path).removeprefix("/")
    bucket, _, key = path.partition("/")
    return bucket, key, query


def parse_copy_source(value: str) -> tuple[str, str, str | None]:
    """(bucket, key, version id) of the header; 400 InvalidArgument for a path that is not
    valid percent-encoded UTF-8, a parameter other than versionId, a malformed version id,
    or a missing bucket or key."""
    path = value.partition("?")[0]
    try:
        if _BAD_ESCAPE.search(path):
            raise ValueError(path)
        unquote(path, errors="strict")
    except (ValueError, UnicodeDecodeError):  # S3's answer (paws-r/paws#819)
        raise S3Error("InvalidArgument", "Invalid copy source encoding.",
                      ArgumentName=HEADER, ArgumentValue=value) from None
    bucket, key, query = split_copy_source(value)
    version_id = None
    if query:
        name, _, vid = query.partition("=")
        if name != "versionId":
            raise S3Error("InvalidArgument", "Unsupported copy source parameter.",
                          ArgumentName=HEADER, ArgumentValue=value)
        version_id = unquote(vid)
        check_version_id(version_id)
    if not bucket or not key:
        raise S3Error("InvalidArgument", "Invalid copy source object key",
                      ArgumentName=HEADER, ArgumentValue=value)
    return bucket, key, version_id
