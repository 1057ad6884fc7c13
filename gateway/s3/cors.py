"""Bucket CORS applied to requests: preflight (OPTIONS) answers and actual-request headers.

The rules are the ones `config_xml.parse_cors` stores in `bucket.config["cors"]`; the first
rule that matches the origin, the method and (for a preflight) every requested header wins,
as in AWS. Origins and headers match with at most one `*` wildcard; origins match case-
sensitively, headers case-insensitively. A preflight is unauthenticated (browsers send no
credentials on OPTIONS), so it uses the bucket whoever owns it. Both read the rules from the
bucket record the request pipeline read (`gateway.s3.context.resolve_bucket`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from gateway.s3.config_xml import CORS_METHODS
from gateway.s3.errors import S3Error
from gateway.s3.policy_conditions import glob_match
from gateway.s3.router import Endpoint
from storage.errors import BucketNotFound
from storage.records import Bucket

__all__ = ["actual_headers", "preflight", "preflight_headers", "request_cors_headers"]

VARY = "Origin, Access-Control-Request-Headers, Access-Control-Request-Method"
NOT_ALLOWED = ("CORSResponse: This CORS request is not allowed. This is usually because the "
               "evalution of Origin, request method / Access-Control-Request-Method or "
               "Access-Control-Request-Headers are not whitelisted by the resource's CORS "
               "spec.")
NOT_ENABLED = "CORSResponse: CORS is not enabled for this bucket."

Rule = Mapping[str, Any]


def _wildcard(pattern: str, value: str, fold: bool) -> bool:
    """`*` any run of characters, matched without backtracking (the policy matcher: a
    many-star AllowedOrigin no longer costs every preflight exponential time)."""
    if fold:
        pattern, value = pattern.lower(), value.lower()
    return glob_match(pattern, value, one=False)


def _origin_ok(rule: Rule, origin: str) -> bool:
    return any(_wildcard(o, origin, fold=False) for o in rule["allowed_origins"])


def _headers_ok(rule: Rule, requested: list[str]) -> bool:
    return all(any(_wildcard(a, h, fold=True) for a in rule["allowed_headers"])
               for h in requested)


def _response_headers(rule: Rule, origin: str, requested: list[str]) -> dict[str, str]:
    star = "*" in rule["allowed_origins"]
    out = {"Access-Control-Allow-Origin": "*" if star else origin,
           "Access-Control-Allow-Methods": ", ".join(rule["allowed_methods"])}
    if requested:
        out["Access-Control-Allow-Headers"] = ", ".join(requested)
    if rule["expose_headers"]:
        out["Access-Control-Expose-Headers"] = ", ".join(rule["expose_headers"])
    if rule.get("max_age") is not None:
        out["Access-Control-Max-Age"] = str(rule["max_age"])
    if not star:
        out["Access-Control-Allow-Credentials"] = "true"
    out["Vary"] = VARY
    return out


def preflight_headers(rules: list[Rule] | None, origin: str | None, method: str | None,
                      request_headers: str | None, resource_type: str) -> dict[str, str]:
    """The headers of a successful preflight, or the S3Error AWS answers (raised)."""
    if not origin:
        raise S3Error("BadRequest", "Insufficient information. Origin request header needed.")
    if method not in CORS_METHODS:
        raise S3Error("BadRequest", f"Invalid Access-Control-Request-Method: {method}")
    if rules is None:
        raise S3Error("AccessForbidden", NOT_ENABLED, Method=method,
                      ResourceType=resource_type)
    requested = [h.strip().lower() for h in (request_headers or "").split(",") if h.strip()]
    for rule in rules:
        if (method in rule["allowed_methods"] and _origin_ok(rule, origin)
                and _headers_ok(rule, requested)):
            return _response_headers(rule, origin, requested)
    raise S3Error("AccessForbidden", NOT_ALLOWED, Method=method, ResourceType=resource_type)


def actual_headers(rules: list[Rule] | None, origin: str, method: str) -> dict[str, str]:
    """CORS headers for an actual (non-preflight) request; empty when no rule matches."""
    if not rules or not origin:
        return {}
    for rule in rules:
        if method in rule["allowed_methods"] and _origin_ok(rule, origin):
            return _response_headers(rule, origin, [])
    return {}


def preflight(request: web.Request, ep: Endpoint, b: Bucket | None,
              live: bool = True) -> web.Response:
    """Answer an OPTIONS preflight for a bucket or an object (no authentication) from the
    record `b` of the bucket it addresses (None: no such bucket); a bucket whose tenant is
    not `live` (shredded) has no usable rule: AWS's "This CORS request is not allowed"."""
    h = request.headers
    if ep.bucket is None:
        raise S3Error("BadRequest", "Insufficient information. Origin request header needed.")
    origin, method = h.get("Origin"), h.get("Access-Control-Request-Method")
    if not origin:
        raise S3Error("BadRequest", "Insufficient information. Origin request header needed.")
    if b is None:
        raise BucketNotFound(ep.bucket)
    headers = preflight_headers(b.config.get("cors") if live else [], origin, method,
                                h.get("Access-Control-Request-Headers"),
                                "OBJECT" if ep.key is not None else "BUCKET")
    return web.Response(status=200, headers=headers)


def request_cors_headers(request: web.Request, bucket: str | None, b: Bucket | None,
                         ) -> dict[str, str]:
    """Headers to add to the response of an actual request carrying `Origin`, from the
    record `b` of its bucket (None: no such bucket, no headers)."""
    origin = request.headers.get("Origin")
    if not origin or bucket is None or b is None:
        return {}
    return actual_headers(b.config.get("cors"), origin, request.method)
