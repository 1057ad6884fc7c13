"""A test's own bucket on a shared cluster: made under a unique name, and removed whatever
its keys hold."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any


def drop_bucket(s3: Any, name: str) -> None:
    """Delete every version and delete marker of bucket `name`, then the bucket (DeleteBucket
    aborts its uploads in progress). botocore lists with encoding-type=url and decodes, so
    keys XML 1.0 cannot carry (NUL, \\x01) are found too, and each is deleted by its URL (a
    DeleteObjects body cannot carry them). Left behind, such keys made every later listing
    of the whole cluster without encoding-type (`s3cmd la -r`) a 400 for other tests."""
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=name):
        for v in page.get("Versions", []) + page.get("DeleteMarkers", []):
            s3.delete_object(Bucket=name, Key=v["Key"], VersionId=v["VersionId"])
    s3.delete_bucket(Bucket=name)


@contextlib.contextmanager
def fresh_bucket(s3: Any, prefix: str) -> Iterator[str]:
    """A new bucket named `prefix`-<random>, dropped (with all it holds) when the block ends:
    tests on the session's shared cluster never see each other's keys."""
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    try:
        yield name
    finally:
        drop_bucket(s3, name)
