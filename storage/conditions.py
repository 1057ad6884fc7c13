"""Preconditions of writes and deletes, checked inside the metadata compare-and-swap loop.

A conditional write (PutObject, CompleteMultipartUpload, CopyObject with `If-Match` /
`If-None-Match`) and a conditional delete (`If-Match`, `x-amz-if-match-last-modified-time`,
`x-amz-if-match-size`, or the same per object in DeleteObjects) are evaluated against the
record read in the same loop iteration whose revision the transaction compares, so two
writers racing through different gateways cannot both pass a precondition that only one of
them may: the loser's transaction fails, it re-reads, and its precondition is checked again.

Semantics (AWS's "conditional requests" and DeleteObject reference):
- `If-None-Match: *` fails (412) when a live object exists; `If-None-Match: <etag>` fails
  when the live object has that ETag.
- `If-Match` on a key with no live object (absent, or a delete marker is current) is
  404 NoSuchKey; `If-Match: *` passes on any live object, `If-Match: <etag>` only on that ETag.
- Deletes of the current object: `If-Match` (`*` or an ETag) on a key with no live object
  (absent, or a delete marker is current) is 404 NoSuchKey, as AWS answers (measured
  against S3 by LocalStack #13894 and ministack #1475; AWS's guide: "Conditional delete
  evaluations only apply to the current version"); the time and size conditions alone on
  a missing key are the successful no-op (204) AWS documents for them; a mismatch is 412.
  A current delete marker "exists" for the time and size comparisons.
- Deletes of one version by id: a version that does not exist is the no-op whatever the
  condition; `If-Match: *` on a delete-marker version is that no-op too.
"""

from __future__ import annotations

from dataclasses import dataclass

from storage.errors import Conflict, ObjectNotFound
from storage.records import ObjectVersion


class PreconditionFailed(Conflict):
    """A write or delete precondition did not hold (412); `condition` names the header."""

    def __init__(self, condition: str) -> None:
        super().__init__(f"precondition {condition} failed")
        self.condition = condition


@dataclass(frozen=True)
class WriteConditions:
    """`If-Match` / `If-None-Match` of a write: "*" or an ETag without quotes."""

    if_match: str | None = None
    if_none_match: str | None = None

    def check(self, bucket: str, key: str, current: ObjectVersion | None) -> None:
        """Raise unless the write may replace `current` (the key's current record)."""
        live = current is not None and not current.delete_marker
        if self.if_match is not None:
            if not live:
                raise ObjectNotFound(bucket, key)
            assert current is not None
            if self.if_match != "*" and current.etag != self.if_match:
                raise PreconditionFailed("If-Match")
        if self.if_none_match is not None and live:
            assert current is not None
            if self.if_none_match == "*" or current.etag == self.if_none_match:
                raise PreconditionFailed("If-None-Match")


@dataclass(frozen=True)
class DeleteConditions:
    """Conditions of a delete: ETag ("*" or value), Last-Modified (whole seconds), size."""

    if_match: str | None = None
    last_modified: int | None = None
    size: int | None = None

    @property
    def empty(self) -> bool:
        return self.if_match is None and self.last_modified is None and self.size is None

    def check_current(self, bucket: str, key: str, current: ObjectVersion | None) -> None:
        """Raise ObjectNotFound (404 NoSuchKey) when `If-Match` is sent for the current
        object and the key has none live (absent, or a delete marker is current)."""
        if self.if_match is not None and (current is None or current.delete_marker):
            raise ObjectNotFound(bucket, key)

    def applies(self, target: ObjectVersion | None) -> bool:
        """True if the delete goes ahead on `target`; False for the no-op of a missing
        object; raises PreconditionFailed on a mismatch."""
        if self.empty:
            return True
        if target is None:
            return False
        if target.delete_marker and self.if_match == "*":
            return False
        if self.if_match is not None and self.if_match != "*" and (
                target.delete_marker or target.etag != self.if_match):
            raise PreconditionFailed("If-Match")
        if self.last_modified is not None and int(target.last_modified) != self.last_modified:
            raise PreconditionFailed("x-amz-if-match-last-modified-time")
        if self.size is not None and target.size != self.size:
            raise PreconditionFailed("x-amz-if-match-size")
        return True

    def applies_version(self, target: ObjectVersion, current: ObjectVersion | None,
                        others: int) -> bool:
        """`applies` for a delete of one version by id; `current` is the key's current
        record and `others` how many other versions the key has (lifecycle checks them)."""
        return self.applies(target)


def etag_value(header: str | None) -> str | None:
    """A header's ETag without quotes (or "*"); None when the header is absent."""
    if header is None:
        return None
    value = header.strip()
    return "*" if value == "*" else value.strip('"')
