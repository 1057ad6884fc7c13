"""What an S3 request carries between the pipeline's steps (its aiohttp state), one typed key
each: aiohttp 3.14 warns (NotAppKeyWarning) on a string key, and a key object cannot be
misspelt where it is read. Most are written for the access log (gateway/s3/access_log.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from gateway.s3.bodyrecv import DirectBody
    from gateway.s3.replay import BodyReplay
    from gateway.s3.router import Endpoint
    from storage.records import Bucket

REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id")
ENDPOINT: web.RequestKey[Endpoint] = web.RequestKey("s3_endpoint")
BUCKET_RECORD: web.RequestKey[Bucket | None] = web.RequestKey("s3_bucket_record")
CORS_HEADERS: web.RequestKey[dict[str, str]] = web.RequestKey("cors_headers")
CONTINUED: web.RequestKey[bool] = web.RequestKey("s3_continued")  # 100 Continue sent
BODY_REPLAY: web.RequestKey[BodyReplay] = web.RequestKey("s3_body_replay")
BODY_DONE: web.RequestKey[float] = web.RequestKey("s3_body_done")  # perf_counter
# the body received past aiohttp (gateway/s3/bodyrecv.py): if not whole, the connection ends
BODY_TAKEN: web.RequestKey[DirectBody] = web.RequestKey("s3_body_taken")
FIRST_BYTE: web.RequestKey[float] = web.RequestKey("s3_first_byte")  # perf_counter
REQUESTER_ID: web.RequestKey[str] = web.RequestKey("s3_requester_id")
ERROR_CODE: web.RequestKey[str] = web.RequestKey("s3_error_code")
ACL_REQUIRED: web.RequestKey[bool] = web.RequestKey("s3_acl_required")
# DeleteObjects' per-key records: (key, version id, error code or None)
LOG_BATCH: web.RequestKey[list[tuple[str, str | None, str | None]]] = \
    web.RequestKey("s3_log_batch")
# the bucket policy as authz.holds_permission evaluates it, parsed once per request:
# (policy text, statements, requester, RestrictPublicBuckets applies)
HOLDS_POLICY: web.RequestKey[tuple[Any, ...]] = web.RequestKey("s3_holds_policy")
# (policy text, its statements): the bucket policy parsed once per request
POLICY_STATEMENTS: web.RequestKey[tuple[str, list[Any]]] = web.RequestKey("s3_policy_sts")
# (authz.Requester or None,): who signed, looked up once for DeleteObjects' per-key checks
KEY_REQUESTER: web.RequestKey[tuple[Any, ...]] = web.RequestKey("s3_key_requester")
# a PutObjectRetention/PutObjectLegalHold body, read once before authorization: (what it
# asks, the request's headers with the x-amz-object-lock-* ones it sets: its condition keys)
LOCK_BODY: web.RequestKey[tuple[Any, Any]] = web.RequestKey("s3_lock_body")
# a signed POST upload's signature version ("AWS4-HMAC-SHA256" or "AWS"): with it, its
# s3:authType is POST (authz.context)
FORM_SIGNATURE: web.RequestKey[str] = web.RequestKey("s3_form_signature")
OWNERS: web.RequestKey[dict[str, tuple[str, str]]] = web.RequestKey("owners")  # listings
ABORTED_MID_BODY: web.RequestKey[bool] = web.RequestKey("aborted_mid_body")
