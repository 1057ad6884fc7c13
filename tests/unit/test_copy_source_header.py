"""`x-amz-copy-source` read once (gateway/s3/copy_source.py) for CopyObject, UploadPartCopy
and the access log: the forms clients send (botocore URL-encodes the key with '/' safe and
'+' as %2B; the aws CLI and s3cmd send a leading '/'), a version id, and the refusals."""

from __future__ import annotations

import pytest

from gateway.s3.copy_source import parse_copy_source, split_copy_source
from gateway.s3.errors import S3Error

VID = "GO8F95yuPQ8ybcSHkN_lKDeBcb9FmkFD"  # one new_version_id() made: well formed


@pytest.mark.parametrize(("value", "want"), [
    ("b/k", ("b", "k", None)),
    ("/b/k", ("b", "k", None)),
    ("b/a/b/c.txt", ("b", "a/b/c.txt", None)),
    ("b/a%2Fb", ("b", "a/b", None)),
    ("b/a+b%2Bc", ("b", "a+b+c", None)),  # '+' is a plus, never a space
    ("b/a%20b", ("b", "a b", None)),
    ("b/%C3%BCber/%E2%82%AC", ("b", "über/€", None)),
    ("b/what%3F", ("b", "what?", None)),  # an encoded '?' is the key's
    (f"b/k?versionId={VID}", ("b", "k", VID)),
    (f"/b/a%2Bb?versionId={VID}", ("b", "a+b", VID)),
    ("b/k?versionId=null", ("b", "k", "null")),
])
def test_forms(value: str, want: tuple[str, str, str | None]) -> None:
    assert parse_copy_source(value) == want
    assert split_copy_source(value)[:2] == want[:2]


@pytest.mark.parametrize("value", ["b", "b/", "/b", "/", "", "b/k?partNumber=1",
                                   "b/k?versionId=", "b/k?versionId=a%00b"])
def test_refused(value: str) -> None:
    with pytest.raises(S3Error) as e:
        parse_copy_source(value)
    assert (e.value.status, e.value.code) == (400, "InvalidArgument")


@pytest.mark.parametrize("value", ["b/%", "b/k%2", "b/%zz", "b/a%FF", "b/%C3", "%ZZb/k"])
def test_bad_encoding_refused(value: str) -> None:
    """A path that is not valid percent-encoded UTF-8 is 400 InvalidArgument "Invalid copy
    source encoding.", as S3 answers (measured in paws-r/paws#819); it was read as a literal
    '%' (NoSuchKey) or, for invalid UTF-8, as U+FFFD: `b/a%FF` copied the key "a\ufffd"."""
    with pytest.raises(S3Error) as e:
        parse_copy_source(value)
    assert (e.value.status, e.value.code) == (400, "InvalidArgument")
    assert e.value.message == "Invalid copy source encoding."
