"""Bucket configuration documents: CORS, default encryption (XML) and policy (JSON); lifecycle
in `gateway.s3.config_lifecycle`.

Each parser validates like AWS (same error codes and messages where AWS documents or is known
to send them) and returns plain dicts and lists, which the bucket record stores as they are
(msgpack) and which other components (the CORS evaluator, the lifecycle worker) read without
knowing XML. Each builder turns the stored form back into the XML AWS would return, so a
configuration round-trips through Put and Get.
"""

from __future__ import annotations

import re
from typing import Any

from gateway.s3.errors import S3Error, xml_document
from gateway.s3.xml import _add, _root
from gateway.s3.xml_parse import (
    find_all,
    find_text,
    invalid_argument,
    malformed,
    only_children,
    parse_document,
    parse_int,
)
from storage import jsondoc

__all__ = [
    "CORS_METHODS",
    "DEFAULT_ENCRYPTION",
    "cors_xml",
    "encryption_xml",
    "parse_cors",
    "parse_encryption",
    "validate_policy",
]

CORS_METHODS = ("GET", "PUT", "POST", "DELETE", "HEAD")
CORS_RULES_MAX = 100
RULE_ID_CHARS_MAX = 255
POLICY_BYTES_MAX = 20 * 1024
SSE_ALGORITHMS = ("AES256", "aws:kms", "aws:kms:dsse")
BLOCKABLE_TYPES = ("NONE", "SSE-C")  # BlockedEncryptionTypes' EncryptionType values
POLICY_VERSIONS = ("2012-10-17", "2008-10-17")

#: What GetBucketEncryption answers for a bucket without its own configuration: since January
#: 2023 every S3 bucket has SSE-S3 (AES256) as its default encryption.
DEFAULT_ENCRYPTION: dict[str, Any] = {"algorithm": "AES256", "kms_key_id": None,
                                      "bucket_key_enabled": False}


# --- CORS ----------------------------------------------------------------------------------


def parse_cors(body: bytes) -> list[dict[str, Any]]:
    """CORSConfiguration -> [{id, allowed_origins, allowed_methods, allowed_headers,
    expose_headers, max_age}] (1 to 100 rules, in the order sent)."""
    root = parse_document(body, "CORSConfiguration")
    only_children(root, (), ("CORSRule",))
    rules = find_all(root, "CORSRule")
    if not rules or len(rules) > CORS_RULES_MAX:
        raise malformed(f"{len(rules)} CORS rules; 1 to {CORS_RULES_MAX} allowed")
    out = []
    for rule in rules:
        only_children(rule, ("ID", "MaxAgeSeconds"), ("AllowedOrigin", "AllowedMethod",
                                                      "AllowedHeader", "ExposeHeader"))
        origins = [(e.text or "").strip() for e in find_all(rule, "AllowedOrigin")]
        methods = [(e.text or "").strip() for e in find_all(rule, "AllowedMethod")]
        if not origins or not methods:
            raise malformed("a CORSRule needs AllowedOrigin and AllowedMethod")
        for m in methods:
            if m not in CORS_METHODS:
                raise S3Error("InvalidRequest", "Found unsupported HTTP method in CORS config. "
                              f"Unsupported method is {m}")
        for o in origins:
            if o.count("*") > 1:
                raise S3Error("InvalidRequest", f'AllowedOrigin "{o}" can not have more than '
                              "one wildcard.")
        headers = [(e.text or "").strip() for e in find_all(rule, "AllowedHeader")]
        for h in headers:
            if h.count("*") > 1:
                raise S3Error("InvalidRequest", f'AllowedHeader "{h}" can not have more than '
                              "one wildcard.")
        expose = [(e.text or "").strip() for e in find_all(rule, "ExposeHeader")]
        for h in expose:
            if "*" in h:
                raise S3Error("InvalidRequest", f'ExposeHeader "{h}" contains wildcard. We '
                              "currently do not support wildcard for ExposeHeader.")
        rule_id = find_text(rule, "ID")
        if rule_id is not None and len(rule_id) > RULE_ID_CHARS_MAX:
            raise S3Error("InvalidArgument", "ID length should not exceed allowed limit of 255",
                          ArgumentName="ID", ArgumentValue=rule_id)
        out.append({"id": rule_id, "allowed_origins": origins, "allowed_methods": methods,
                    "allowed_headers": headers, "expose_headers": expose,
                    "max_age": parse_int(find_text(rule, "MaxAgeSeconds"), "MaxAgeSeconds")})
    return out


def cors_xml(rules: list[dict[str, Any]]) -> bytes:
    """GetBucketCors: the stored rules as CORSConfiguration."""
    root = _root("CORSConfiguration")
    for r in rules:
        elem = _add(root, "CORSRule", None)
        if r.get("id") is not None:
            _add(elem, "ID", r["id"])
        for h in r["allowed_headers"]:
            _add(elem, "AllowedHeader", h)
        for m in r["allowed_methods"]:
            _add(elem, "AllowedMethod", m)
        for o in r["allowed_origins"]:
            _add(elem, "AllowedOrigin", o)
        for h in r["expose_headers"]:
            _add(elem, "ExposeHeader", h)
        if r.get("max_age") is not None:
            _add(elem, "MaxAgeSeconds", r["max_age"])
    return xml_document(root)


# --- default encryption --------------------------------------------------------------------


def parse_encryption(body: bytes) -> dict[str, Any]:
    """ServerSideEncryptionConfiguration -> {algorithm, kms_key_id, bucket_key_enabled,
    blocked}; `blocked` lists the encryption types new objects may not use (BlockedEncryption
    Types: SSE-C or NONE), enforced by `gateway.s3.sse.for_request`. An unknown or repeated
    element is MalformedXML, never dropped."""
    root = parse_document(body, "ServerSideEncryptionConfiguration")
    only_children(root, (), ("Rule",))
    rules = find_all(root, "Rule")
    if len(rules) != 1:
        raise malformed(f"{len(rules)} encryption rules; exactly 1 allowed")
    only_children(rules[0], ("ApplyServerSideEncryptionByDefault", "BucketKeyEnabled",
                             "BlockedEncryptionTypes"))
    algorithm, key_id = _default_encryption(rules[0])
    blocked = _blocked_types(rules[0])
    if algorithm is None and not find_all(rules[0], "BlockedEncryptionTypes"):
        raise malformed("Rule needs ApplyServerSideEncryptionByDefault or "
                        "BlockedEncryptionTypes")
    bke = (find_text(rules[0], "BucketKeyEnabled") or "false").strip()
    if bke not in ("true", "false"):
        raise malformed(f"BucketKeyEnabled {bke!r}")
    return {"algorithm": algorithm, "kms_key_id": key_id, "bucket_key_enabled": bke == "true",
            "blocked": blocked}


def _default_encryption(rule: Any) -> tuple[str | None, str | None]:
    """ApplyServerSideEncryptionByDefault -> (SSEAlgorithm, KMSMasterKeyID). AWS marks it
    optional (a rule may only block encryption types): without it, (None, None), and new
    objects that ask for no encryption get the SSE-S3 every bucket has."""
    defaults = find_all(rule, "ApplyServerSideEncryptionByDefault")
    if not defaults:
        return None, None
    if len(defaults) != 1:
        raise malformed("Rule has more than one ApplyServerSideEncryptionByDefault")
    only_children(defaults[0], ("SSEAlgorithm", "KMSMasterKeyID"))
    algorithm = find_text(defaults[0], "SSEAlgorithm")
    if algorithm not in SSE_ALGORITHMS:
        raise malformed(f"SSEAlgorithm {algorithm!r}")
    key_id = find_text(defaults[0], "KMSMasterKeyID") or None
    if key_id is not None and algorithm == "AES256":
        raise invalid_argument("a KMSMasterKeyID is not applicable if the default sse algorithm "
                               "is not aws:kms or aws:kms:dsse",
                               "ApplyServerSideEncryptionByDefault")
    return algorithm, key_id


def _blocked_types(rule: Any) -> list[str]:
    """BlockedEncryptionTypes' EncryptionType values, each once, in the order sent."""
    out: list[str] = []
    for elem in find_all(rule, "BlockedEncryptionTypes"):
        only_children(elem, (), ("EncryptionType",))
        for t in find_all(elem, "EncryptionType"):
            value = (t.text or "").strip()
            if value not in BLOCKABLE_TYPES:
                raise malformed(f"EncryptionType {value!r}")
            if value not in out:
                out.append(value)
    return out


def encryption_xml(conf: dict[str, Any]) -> bytes:
    """GetBucketEncryption."""
    root = _root("ServerSideEncryptionConfiguration")
    rule = _add(root, "Rule", None)
    if conf.get("algorithm"):  # a rule may only block types: returned as it was put
        d = _add(rule, "ApplyServerSideEncryptionByDefault", None)
        _add(d, "SSEAlgorithm", conf["algorithm"])
        if conf.get("kms_key_id"):
            _add(d, "KMSMasterKeyID", conf["kms_key_id"])
    _add(rule, "BucketKeyEnabled", bool(conf.get("bucket_key_enabled")))
    if conf.get("blocked"):
        blocked = _add(rule, "BlockedEncryptionTypes")
        for value in conf["blocked"]:
            _add(blocked, "EncryptionType", value)
    return xml_document(root)


# --- bucket policy -------------------------------------------------------------------------

# service:action; both parts are case-insensitive in IAM ("IAM:listaccesskeys" is
# iam:ListAccessKeys), and `policy.applies` compares them so.
_ACTION = re.compile(r"^(\*|[A-Za-z0-9-]+:[A-Za-z0-9*?]+)$")


def _policy_error(message: str) -> S3Error:
    return S3Error("MalformedPolicy", message)


def validate_policy(body: bytes) -> str:
    """Check a bucket policy document's shape; returns its text (stored as sent)."""
    if len(body) > POLICY_BYTES_MAX:
        raise _policy_error("Policy exceeds the maximum allowed document size.")
    try:
        text = body.decode("utf-8")
        doc = jsondoc.loads(text)
    except (UnicodeDecodeError, ValueError):
        raise _policy_error("Policies must be valid JSON and the first byte must be '{'") \
            from None
    if not isinstance(doc, dict) or not text.lstrip().startswith("{"):
        raise _policy_error("Policies must be valid JSON and the first byte must be '{'")
    version = doc.get("Version")
    if version is not None and version not in POLICY_VERSIONS:
        raise _policy_error("Invalid policy document version")
    statements = doc.get("Statement")
    if statements is None:
        raise _policy_error("Missing required field Statement")
    if isinstance(statements, dict):
        statements = [statements]
    if not isinstance(statements, list) or not statements:
        raise _policy_error("Missing required field Statement")
    for st in statements:
        if not isinstance(st, dict):
            raise _policy_error("Statement is not an object")
        if st.get("Effect") not in ("Allow", "Deny"):
            raise _policy_error("Invalid effect: " + str(st.get("Effect")))
        if "Action" not in st and "NotAction" not in st:
            raise _policy_error("Missing required field Action")
        if "Principal" not in st and "NotPrincipal" not in st:
            raise _policy_error("Missing required field Principal")
        if "Resource" not in st and "NotResource" not in st:
            raise _policy_error("Missing required field Resource")
        actions = st.get("Action", st.get("NotAction"))
        for a in [actions] if isinstance(actions, str) else actions or []:
            if not isinstance(a, str) or not _ACTION.match(a):
                raise _policy_error("Policy has invalid action")
    return text
