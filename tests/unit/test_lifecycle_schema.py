"""A lifecycle document's elements are the published schema's: an unknown, misspelt or
repeated element is MalformedXML, never accepted and silently ignored (a misspelt
NoncurrentVersionExpiration beside a valid action was stored without it, so noncurrent
versions were kept for ever; a second Expiration was dropped)."""

from __future__ import annotations

import pytest

from gateway.s3.config_lifecycle import lifecycle_xml, parse_lifecycle
from gateway.s3.errors import S3Error

EXP = "<Expiration><Days>5</Days></Expiration>"


def doc(rule_body: str, outside: str = "") -> bytes:
    return (f"<LifecycleConfiguration>{outside}<Rule><ID>r</ID><Filter/><Status>Enabled</Status>"
            f"{rule_body}</Rule></LifecycleConfiguration>").encode()


@pytest.mark.parametrize("body", [
    doc(EXP + "<NoncurrentVersionExpiraton><NoncurrentDays>3</NoncurrentDays>"
              "</NoncurrentVersionExpiraton>"),
    doc(EXP + "<Expiration><Days>9</Days></Expiration>"),
    doc("<Expiration><Days>5</Days><Days>9</Days></Expiration>"),
    doc("<Expiration><Days>5</Days><Dais>9</Dais></Expiration>"),
    doc("<Transition><Days>5</Days><Days>1</Days><StorageClass>GLACIER</StorageClass>"
        "</Transition>"),
    doc("<NoncurrentVersionTransition><NoncurrentDays>5</NoncurrentDays><Days>1</Days>"
        "<StorageClass>GLACIER</StorageClass></NoncurrentVersionTransition>"),
    doc("<NoncurrentVersionExpiration><NoncurrentDays>5</NoncurrentDays><Days>1</Days>"
        "</NoncurrentVersionExpiration>"),
    doc("<AbortIncompleteMultipartUpload><DaysAfterInitiation>5</DaysAfterInitiation>"
        "<Days>1</Days></AbortIncompleteMultipartUpload>"),
    doc(EXP + "<Status>Disabled</Status>"),
    doc(EXP + "<ID>other</ID>"),
    doc(EXP, outside="<Rules/>"),
    doc("<Expiration><ExpiredObjectDeleteMarker>yes</ExpiredObjectDeleteMarker></Expiration>"),
    b"<LifecycleConfiguration><Rule><ID>r</ID><Filter><Tag><Key>k</Key><Value>v</Value>"
    b"<Value>w</Value></Tag></Filter><Status>Enabled</Status>" + EXP.encode()
    + b"</Rule></LifecycleConfiguration>",
])
def test_unknown_or_repeated_elements_are_malformed(body: bytes) -> None:
    with pytest.raises(S3Error) as ei:
        parse_lifecycle(body)
    assert ei.value.code == "MalformedXML"


def test_every_action_together_still_parses_and_round_trips() -> None:
    body = doc("<Expiration><Days>70</Days></Expiration>"
               "<Transition><Days>30</Days><StorageClass>STANDARD_IA</StorageClass></Transition>"
               "<Transition><Days>60</Days><StorageClass>GLACIER</StorageClass></Transition>"
               "<NoncurrentVersionExpiration><NoncurrentDays>9</NoncurrentDays>"
               "<NewerNoncurrentVersions>2</NewerNoncurrentVersions>"
               "</NoncurrentVersionExpiration>"
               "<NoncurrentVersionTransition><NoncurrentDays>1</NoncurrentDays>"
               "<StorageClass>GLACIER</StorageClass></NoncurrentVersionTransition>"
               "<AbortIncompleteMultipartUpload><DaysAfterInitiation>2</DaysAfterInitiation>"
               "</AbortIncompleteMultipartUpload>")
    rules = parse_lifecycle(body)
    assert len(rules[0]["transitions"]) == 2 and rules[0]["noncurrent_expiration"]
    assert parse_lifecycle(lifecycle_xml(rules)) == rules
    marker = parse_lifecycle(doc("<Expiration><ExpiredObjectDeleteMarker>false"
                                 "</ExpiredObjectDeleteMarker></Expiration>"))
    assert marker[0]["expiration"]["expired_object_delete_marker"] is False
