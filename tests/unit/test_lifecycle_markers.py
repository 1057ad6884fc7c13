"""Lifecycle rules and delete markers, where AWS's documentation says how they meet.

Sources (AWS S3 User Guide):
- "Examples of S3 Lifecycle configurations", section "Expiring noncurrent objects that have no
  data": "You can also create rules to specifically expire noncurrent objects that have no
  data, including noncurrent delete marker objects created in a versioning-enabled bucket",
  with a NoncurrentVersionExpiration rule filtered by `ObjectSizeLessThan` 1. So to the size
  bounds a delete marker is an object of no data (0 bytes): `ObjectSizeLessThan` 1 selects
  it, and `ObjectSizeGreaterThan` (strict, "exclude the specified values") never does.
- same page, "Removing expired object delete markers": "When you use the
  ExpiredObjectDeleteMarker S3 Lifecycle action, the rule cannot specify a tag-based filter."
  (the error AWS answers is not documented; Tessera answers MalformedXML, unchanged).

- the filter's definition (API model, `LifecycleRuleFilter` Tag): "This tag must exist in the
  object's tag set in order for the rule to apply". A marker has no
  tags, so a tag filter selects no marker, current (ExpiredObjectDeleteMarker, Days) or
  noncurrent (NoncurrentVersionExpiration): one reading for both (review20g F4; a
  tag-filtered noncurrent rule removed every noncurrent marker under its prefix before).

Not documented by AWS, left as it is: the minimum gap between a GLACIER and a DEEP_ARCHIVE transition of one rule (the API reference
says only that some classes have minimum storage durations, and are charged for; Tessera
enforces none).
"""

from __future__ import annotations

import pytest

from gateway.s3.config_lifecycle import parse_lifecycle
from gateway.s3.errors import S3Error
from storage.lifecycle_rules import noncurrent_action
from storage.records import ObjectVersion

DAY = 86400.0
NOW = 100 * DAY


def _rules(flt: str) -> list[dict]:
    return parse_lifecycle(
        b"<LifecycleConfiguration><Rule><ID>r</ID><Status>Enabled</Status>"
        + f"<Filter>{flt}</Filter>".encode()
        + b"<NoncurrentVersionExpiration><NoncurrentDays>30</NoncurrentDays>"
        b"</NoncurrentVersionExpiration></Rule></LifecycleConfiguration>")


def _marker() -> ObjectVersion:
    return ObjectVersion(bucket="b", key="k", version_id="m", tenant="t", size=0, etag="",
                         last_modified=0.0, delete_marker=True)


@pytest.mark.parametrize(("flt", "expired"), [
    ("<ObjectSizeLessThan>1</ObjectSizeLessThan>", True),  # AWS's own example
    ("<ObjectSizeGreaterThan>0</ObjectSizeGreaterThan>", False),
    ("<ObjectSizeGreaterThan>500</ObjectSizeGreaterThan>", False),
    ("<And><Prefix>k</Prefix><ObjectSizeGreaterThan>500</ObjectSizeGreaterThan>"
     "<ObjectSizeLessThan>64000</ObjectSizeLessThan></And>", False),
    ("<Prefix>k</Prefix>", True),
    ("<Tag><Key>t</Key><Value>v</Value></Tag>", False),  # a marker has no tags
    ("<And><Prefix>k</Prefix><Tag><Key>t</Key><Value>v</Value></Tag></And>", False),
])
def test_size_bounds_see_a_noncurrent_delete_marker_as_no_data(flt: str, expired: bool) -> None:
    """A noncurrent delete marker 31 days old: the size bounds take it as 0 bytes (the
    module's first source). Before, they were skipped for markers, so a rule meant for
    objects over 500 bytes also removed every noncurrent delete marker."""
    got = noncurrent_action(_rules(flt), _marker(), since=NOW - 31 * DAY, newer_noncurrent=0,
                            now=NOW, day_s=DAY)
    assert (got is not None and got.kind == "expire") is expired


def test_expired_object_delete_marker_refuses_a_tag_filter() -> None:
    """The module's second source: the rule cannot specify a tag-based filter."""
    body = (b"<LifecycleConfiguration><Rule><ID>r</ID><Status>Enabled</Status><Filter>"
            b"<Tag><Key>k</Key><Value>v</Value></Tag></Filter><Expiration>"
            b"<ExpiredObjectDeleteMarker>true</ExpiredObjectDeleteMarker></Expiration></Rule>"
            b"</LifecycleConfiguration>")
    with pytest.raises(S3Error) as ei:
        parse_lifecycle(body)
    assert ei.value.code == "MalformedXML"
