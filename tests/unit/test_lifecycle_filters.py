"""Lifecycle filters: the XML forms AWS accepts and refuses, and the matcher against a model.

The model states AWS's filter semantics independently of `filter_matches`: a filter is the
conjunction of its predicates (key starts with Prefix; each Tag is in the object's tag set with
that value; size strictly above ObjectSizeGreaterThan and strictly below ObjectSizeLessThan).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.s3.config_lifecycle import lifecycle_xml, parse_lifecycle
from gateway.s3.errors import S3Error
from storage.lifecycle_rules import abort_rule, expiration_rule, filter_matches
from storage.records import ObjectVersion

DAY = 86400.0


def doc(rule_body: str) -> bytes:
    return (b"<LifecycleConfiguration><Rule><ID>r</ID><Status>Enabled</Status>"
            + rule_body.encode() + b"</Rule></LifecycleConfiguration>")


EXP = "<Expiration><Days>1</Days></Expiration>"
TAG = "<Tag><Key>k</Key><Value>v</Value></Tag>"


def code_of(body: bytes) -> str:
    with pytest.raises(S3Error) as ei:
        parse_lifecycle(body)
    return ei.value.code


@pytest.mark.parametrize("flt", [
    "<Filter></Filter>", "<Filter><Prefix>a/</Prefix></Filter>", f"<Filter>{TAG}</Filter>",
    "<Filter><ObjectSizeGreaterThan>10</ObjectSizeGreaterThan></Filter>",
    "<Filter><ObjectSizeLessThan>10</ObjectSizeLessThan></Filter>",
    f"<Filter><And><Prefix>a/</Prefix>{TAG}</And></Filter>",
    "<Filter><And><Tag><Key>a</Key><Value>1</Value></Tag>"
    "<Tag><Key>b</Key><Value>2</Value></Tag></And></Filter>",
    f"<Filter><And><Prefix>a/</Prefix>{TAG}<ObjectSizeGreaterThan>1</ObjectSizeGreaterThan>"
    "<ObjectSizeLessThan>9</ObjectSizeLessThan></And></Filter>",
    "<Prefix>legacy/</Prefix>",
])
def test_accepted_filters_round_trip(flt: str) -> None:
    rules = parse_lifecycle(doc(flt + EXP))
    assert parse_lifecycle(lifecycle_xml(rules)) == rules


@pytest.mark.parametrize("flt,code", [
    (f"<Filter><Prefix>a/</Prefix>{TAG}</Filter>", "MalformedXML"),  # two outside And
    ("<Filter><Prefix></Prefix><ObjectSizeGreaterThan>5</ObjectSizeGreaterThan></Filter>",
     "MalformedXML"),
    (f"<Filter><Prefix>a</Prefix><And><Prefix>a</Prefix>{TAG}</And></Filter>", "MalformedXML"),
    ("<Filter><And><Prefix>a/</Prefix></And></Filter>", "MalformedXML"),  # And of one
    ("<Filter><And><Prefix>a</Prefix><Prefix>b</Prefix></And></Filter>", "MalformedXML"),
    ("<Filter><Color>red</Color></Filter>", "MalformedXML"),
    ("<Prefix>a</Prefix><Filter></Filter>", "MalformedXML"),
    ("", "MalformedXML"),
    ("<Filter><And><Tag><Key>k</Key><Value>1</Value></Tag>"
     "<Tag><Key>k</Key><Value>2</Value></Tag></And></Filter>", "InvalidRequest"),
    ("<Filter><And><ObjectSizeGreaterThan>9</ObjectSizeGreaterThan>"
     "<ObjectSizeLessThan>9</ObjectSizeLessThan></And></Filter>", "InvalidArgument"),
    ("<Filter><ObjectSizeGreaterThan>-1</ObjectSizeGreaterThan></Filter>", "InvalidArgument"),
])
def test_refused_filters(flt: str, code: str) -> None:
    assert code_of(doc(flt + EXP)) == code


def test_refused_actions() -> None:
    assert code_of(doc("<Filter/><Expiration><Days>0</Days></Expiration>")) == \
        "InvalidArgument"
    assert code_of(doc("<Filter/>")) == "InvalidRequest"  # no action
    assert code_of(doc(f"<Filter>{TAG}</Filter><AbortIncompleteMultipartUpload>"
                       "<DaysAfterInitiation>1</DaysAfterInitiation>"
                       "</AbortIncompleteMultipartUpload>")) == "InvalidRequest"  # AWS's
    assert code_of(doc("<Filter/><Expiration><Days>1</Days><ExpiredObjectDeleteMarker>true"
                       "</ExpiredObjectDeleteMarker></Expiration>")) == "MalformedXML"
    nv = ("<Filter/><NoncurrentVersionExpiration><NoncurrentDays>1</NoncurrentDays>"
          "<NewerNoncurrentVersions>{}</NewerNoncurrentVersions></NoncurrentVersionExpiration>")
    assert parse_lifecycle(doc(nv.format(3)))[0]["noncurrent_expiration"] == {
        "noncurrent_days": 1, "newer_noncurrent_versions": 3}
    assert code_of(doc(nv.format(0))) == "InvalidArgument"



def error_of(body: bytes) -> S3Error:
    with pytest.raises(S3Error) as ei:
        parse_lifecycle(body)
    return ei.value


@pytest.mark.parametrize("action,extra", [
    ("NoncurrentVersionTransition", "<StorageClass>GLACIER</StorageClass>"),
    ("NoncurrentVersionExpiration", ""),
    ("NoncurrentVersionExpiration", "<NewerNoncurrentVersions>2</NewerNoncurrentVersions>"),
])
def test_noncurrent_actions_need_noncurrent_days(action: str, extra: str) -> None:
    """Without NoncurrentDays a noncurrent action would never fall due: refused as AWS does
    (InvalidArgument, "'NoncurrentDays' for NoncurrentVersionExpiration action must be a
    positive integer"), not stored to be ignored, and never a 500 (a transition without it
    beside an expiration compared None with a number)."""
    body = doc(f"<Filter/><{action}>{extra}</{action}>")
    err = error_of(body)
    word = "positive" if action == "NoncurrentVersionExpiration" else "nonnegative"
    assert (err.code, err.message) == (
        "InvalidArgument", f"'NoncurrentDays' for {action} action must be a {word} integer")
    both = doc("<Filter/><NoncurrentVersionTransition><StorageClass>GLACIER</StorageClass>"
               "</NoncurrentVersionTransition><NoncurrentVersionExpiration><NoncurrentDays>5"
               "</NoncurrentDays></NoncurrentVersionExpiration>")
    assert error_of(both).code == "InvalidArgument"


@pytest.mark.parametrize("action,extra", [
    ("NoncurrentVersionExpiration", ""),
    ("NoncurrentVersionTransition", "<StorageClass>GLACIER</StorageClass>"),
])
def test_newer_noncurrent_versions_at_most_100(action: str, extra: str) -> None:
    """AWS: "You can specify up to 100 noncurrent versions to retain"."""
    def body(n: int) -> bytes:
        return doc(f"<Filter/><{action}><NoncurrentDays>1</NoncurrentDays>"
                   f"<NewerNoncurrentVersions>{n}</NewerNoncurrentVersions>{extra}</{action}>")
    key = "noncurrent_expiration" if action == "NoncurrentVersionExpiration" else \
        "noncurrent_transitions"
    got = parse_lifecycle(body(100))[0][key]
    assert (got if isinstance(got, dict) else got[0])["newer_noncurrent_versions"] == 100
    err = error_of(body(101))
    assert (err.code, err.message) == (
        "InvalidArgument", f"'NewerNoncurrentVersions' for {action} action must be between 1 "
        "and 100")



def transition(days_or_date: str, sc: str, tag: str = "Transition") -> str:
    when = f"<Date>{days_or_date}</Date>" if "-" in days_or_date else \
        f"<{'NoncurrentDays' if tag != 'Transition' else 'Days'}>{days_or_date}" \
        f"</{'NoncurrentDays' if tag != 'Transition' else 'Days'}>"
    return f"<{tag}>{when}<StorageClass>{sc}</StorageClass></{tag}>"


D1, D2 = "2030-01-01T00:00:00Z", "2030-02-01T00:00:00Z"


@pytest.mark.parametrize("body,code,message", [
    (transition("10", "GLACIER") + transition(D2, "DEEP_ARCHIVE"), "InvalidRequest",
     "Found mixed 'Date' and 'Days' based Transition actions in lifecycle rule for filter "
     "'(prefix=)'"),
    (transition("10", "GLACIER") + f"<Expiration><Date>{D2}</Date></Expiration>",
     "InvalidRequest", "Found mixed 'Date' and 'Days' based Expiration and Transition actions "
     "in lifecycle rule for filter '(prefix=)'"),
    (transition(D1, "GLACIER") + "<Expiration><Days>100</Days></Expiration>", "InvalidRequest",
     "Found mixed 'Date' and 'Days' based Expiration and Transition actions in lifecycle rule "
     "for filter '(prefix=)'"),
    (transition("10", "GLACIER") + transition("40", "STANDARD_IA"), "InvalidArgument",
     "'Days' in the Transition action for StorageClass 'GLACIER' for filter '(prefix=)' must "
     "be greater than 'Days' in the Transition action for StorageClass 'STANDARD_IA' for "
     "filter '(prefix=)'"),
    (transition("60", "ONEZONE_IA") + transition("60", "INTELLIGENT_TIERING"),
     "InvalidArgument", "'Days' in the Transition action for StorageClass 'ONEZONE_IA' for "
     "filter '(prefix=)' must be greater than 'Days' in the Transition action for StorageClass "
     "'INTELLIGENT_TIERING' for filter '(prefix=)'"),
    (transition(D2, "GLACIER") + transition(D1, "DEEP_ARCHIVE"), "InvalidArgument",
     "'Date' in the Transition action for StorageClass 'DEEP_ARCHIVE' for filter '(prefix=)' "
     "must be greater than 'Date' in the Transition action for StorageClass 'GLACIER' for "
     "filter '(prefix=)'"),
    (transition("1", "GLACIER", "NoncurrentVersionTransition")
     + transition("5", "GLACIER_IR", "NoncurrentVersionTransition"), "InvalidArgument",
     "'NoncurrentDays' in the NoncurrentVersionTransition action for StorageClass 'GLACIER' for "
     "filter '(prefix=)' must be greater than 'NoncurrentDays' in the "
     "NoncurrentVersionTransition action for StorageClass 'GLACIER_IR' for filter '(prefix=)'"),
    (transition(D2, "GLACIER") + f"<Expiration><Date>{D1}</Date></Expiration>",
     "InvalidArgument", "'Date' in the Expiration action for filter '(prefix=)' must be greater "
     "than 'Date' in the Transition action"),
])
def test_transition_timing_across_one_rule(body: str, code: str, message: str) -> None:
    """AWS's checks across a rule's transitions (the texts AWS sends): all by Days or all by
    Date, the expiration of the same kind, colder classes strictly later; a colder class
    first would leave the warmer transition (or, with an earlier expiration date, every
    transition) accepted and never applied."""
    err = error_of(doc("<Filter/>" + body))
    assert (err.code, err.message) == (code, message)


def test_transition_timing_in_waterfall_order_is_accepted() -> None:
    rules = parse_lifecycle(doc(
        "<Filter/>" + transition("30", "STANDARD_IA") + transition("60", "INTELLIGENT_TIERING")
        + transition("90", "ONEZONE_IA") + transition("120", "GLACIER")
        + transition("0", "GLACIER_IR", "NoncurrentVersionTransition")
        + transition("7", "DEEP_ARCHIVE", "NoncurrentVersionTransition")
        + "<Expiration><Days>121</Days></Expiration>"))
    assert [t["storage_class"] for t in rules[0]["transitions"]] == \
        ["STANDARD_IA", "INTELLIGENT_TIERING", "ONEZONE_IA", "GLACIER"]
    dated = parse_lifecycle(doc("<Filter/>" + transition(D1, "GLACIER")
                                + f"<Expiration><Date>{D2}</Date></Expiration>"))
    assert dated[0]["expiration"]["date"] == "2030-02-01T00:00:00.000Z"


@pytest.mark.parametrize("days,refused", [
    ((30, 60, 90), ("DEEP_ARCHIVE", 90, "GLACIER_IR")),  # AWS's own answer to this rule
    ((30, 90, 179), ("DEEP_ARCHIVE", 90, "GLACIER_IR")),
    ((30, 59, 200), ("GLACIER_IR", 30, "STANDARD_IA")),
    ((30, 90, 180), None),  # the rule AWS then accepted
])
def test_a_transition_comes_the_warmer_class_minimum_stay_later(
        days: tuple[int, int, int], refused: tuple[str, int, str] | None) -> None:
    """Review18b: AWS wants a Days transition at least the warmer class's minimum stay after
    it (30 days in STANDARD_IA / ONEZONE_IA, 90 in GLACIER_IR); Tessera accepted IA 30 /
    GLACIER_IR 60 / DEEP_ARCHIVE 90 and moved objects after 30 days in GLACIER_IR."""
    ia, gir, da = days
    body = doc("<Filter/>" + transition(str(ia), "STANDARD_IA") + transition(str(gir), "GLACIER_IR")
               + transition(str(da), "DEEP_ARCHIVE"))
    if refused is None:
        assert len(parse_lifecycle(body)[0]["transitions"]) == 3
        return
    cold, gap, warm = refused
    err = error_of(body)
    assert (err.code, err.message) == (
        "InvalidArgument", f"Days in the Transition action for StorageClass {cold} must be "
        f"{gap} days more than Transition for StorageClass {warm}")
    oz = doc("<Filter/>" + transition("30", "ONEZONE_IA") + transition("45", "GLACIER"))
    assert "must be 30 days more than Transition for StorageClass ONEZONE_IA" in \
        error_of(oz).message


def test_noncurrent_transitions_on_one_day_keeping_different_versions_are_accepted() -> None:
    """Review18b: the same NoncurrentDays with different NewerNoncurrentVersions is a
    meaningful rule (keep 2 newer in STANDARD, 3 more in STANDARD_IA, the rest in GLACIER)
    and no AWS source refuses it; it was InvalidArgument. The same day and the same number
    kept (the warmer one could never apply) is still refused."""
    def nct(sc: str, newer: int | None) -> str:
        kept = "" if newer is None else f"<NewerNoncurrentVersions>{newer}</NewerNoncurrentVersions>"
        return (f"<NoncurrentVersionTransition><NoncurrentDays>30</NoncurrentDays>{kept}"
                f"<StorageClass>{sc}</StorageClass></NoncurrentVersionTransition>")
    rules = parse_lifecycle(doc("<Filter/>" + nct("STANDARD_IA", 2) + nct("GLACIER", 5)))
    assert [(t["storage_class"], t["newer_noncurrent_versions"])
            for t in rules[0]["noncurrent_transitions"]] == [("STANDARD_IA", 2), ("GLACIER", 5)]
    for same in ((2, 2), (None, None)):
        err = error_of(doc("<Filter/>" + nct("STANDARD_IA", same[0]) + nct("GLACIER", same[1])))
        assert err.code == "InvalidArgument"


# --- the matcher against a model ------------------------------------------------------------

KEYS = st.text(alphabet="ab/", max_size=4)
TAGSETS = st.dictionaries(st.sampled_from("xyz"), st.sampled_from("12"), max_size=3)
SIZES = st.one_of(st.none(), st.integers(0, 8))


def model(f: dict[str, Any], key: str, size: int, tags: dict[str, str]) -> bool:
    predicates = []
    if f["prefix"] is not None:
        predicates.append(key[:len(f["prefix"])] == f["prefix"])
    for k, v in f["tags"].items():
        predicates.append((k, v) in tags.items())
    if f["size_gt"] is not None:
        predicates.append(size > f["size_gt"])
    if f["size_lt"] is not None:
        predicates.append(size < f["size_lt"])
    return all(predicates)


@settings(max_examples=400, deadline=None)
@given(prefix=st.one_of(st.none(), KEYS), ftags=TAGSETS, gt=SIZES, lt=SIZES, key=KEYS,
       size=st.integers(0, 8), tags=TAGSETS)
def test_matcher_agrees_with_model(prefix: str | None, ftags: dict[str, str], gt: int | None,
                                   lt: int | None, key: str, size: int,
                                   tags: dict[str, str]) -> None:
    f = {"prefix": prefix, "tags": ftags, "size_gt": gt, "size_lt": lt}
    assert filter_matches(f, key, size, tags) == model(f, key, size, tags)


@settings(max_examples=200, deadline=None)
@given(prefix=st.one_of(st.none(), KEYS), ftags=TAGSETS, gt=SIZES, lt=SIZES, key=KEYS,
       size=st.integers(0, 8), tags=TAGSETS)
def test_parsed_xml_filters_select_as_the_model(prefix: str | None, ftags: dict[str, str],
                                                gt: int | None, lt: int | None, key: str,
                                                size: int, tags: dict[str, str]) -> None:
    """Whatever filter the XML states (single condition or And), the stored rule selects
    exactly what the model says; filters AWS refuses are refused."""
    preds = ([f"<Prefix>{prefix}</Prefix>"] if prefix is not None else []) + \
        [f"<Tag><Key>{k}</Key><Value>{v}</Value></Tag>" for k, v in ftags.items()] + \
        ([f"<ObjectSizeGreaterThan>{gt}</ObjectSizeGreaterThan>"] if gt is not None else []) + \
        ([f"<ObjectSizeLessThan>{lt}</ObjectSizeLessThan>"] if lt is not None else [])
    inner = "".join(preds) if len(preds) < 2 else f"<And>{''.join(preds)}</And>"
    body = doc(f"<Filter>{inner}</Filter>{EXP}")
    if gt is not None and lt is not None and gt >= lt:
        assert code_of(body) == "InvalidArgument"
        return
    rule = parse_lifecycle(body)[0]
    want = {"prefix": prefix, "tags": ftags, "size_gt": gt, "size_lt": lt}
    assert filter_matches(rule["filter"], key, size, tags) == model(want, key, size, tags)


def test_expiration_and_abort_dates() -> None:
    rules = parse_lifecycle(
        b"<LifecycleConfiguration>"
        b"<Rule><ID>late</ID><Status>Enabled</Status><Filter/><Expiration><Days>3</Days>"
        b"</Expiration></Rule>"
        b"<Rule><ID>early</ID><Status>Enabled</Status><Filter><Prefix>a/</Prefix></Filter>"
        b"<Expiration><Days>1</Days></Expiration><AbortIncompleteMultipartUpload>"
        b"<DaysAfterInitiation>2</DaysAfterInitiation></AbortIncompleteMultipartUpload></Rule>"
        b"<Rule><ID>off</ID><Status>Disabled</Status><Filter/><Expiration><Days>1</Days>"
        b"</Expiration></Rule>"
        b"</LifecycleConfiguration>")
    lm = 1_356_000_000.0  # 2012-12-20 10:40 UTC
    v = ObjectVersion(bucket="b", key="a/x", version_id="null", tenant="t", size=1, etag="e",
                      last_modified=lm)
    assert expiration_rule(rules, v, DAY) == (1_356_134_400.0, "early")  # 2012-12-22 00:00
    v.key = "b/x"
    assert expiration_rule(rules, v, DAY) == (1_356_307_200.0, "late")
    v.delete_marker = True
    assert expiration_rule(rules, v, DAY) is None
    assert abort_rule(rules, "a/x", lm, DAY) == (1_356_220_800.0, "early")
    assert abort_rule(rules, "b/x", lm, DAY) is None
