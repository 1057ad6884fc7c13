"""DeleteObjects (POST ?delete): up to 1000 keys in one request, quiet or verbose.

Also `read_small_body`, the bounded reader for configuration bodies, which applies every
integrity check a client can send (payload SHA-256, aws-chunked framing, Content-MD5,
x-amz-checksum-*) and can require one of Content-MD5 and a checksum, as AWS does for
DeleteObjects and some bucket configurations.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from gateway.s3 import authz, xml, xml_parse
from gateway.s3.body import RequestBody
from gateway.s3.errors import S3Error
from gateway.s3.errors_map import to_s3_error
from gateway.s3.handlers import S3Request, operation, xml_response
from gateway.s3.handlers.object_lock import delete_judged
from gateway.s3.request_keys import LOG_BATCH
from gateway.s3.router import KEY_BYTES_MAX, check_version_id
from storage.crypto.md5 import md5 as new_md5

SMALL_BODY_BYTES_MAX = 1 << 20
DELETE_BODY_BYTES_MAX = 8 << 20
DELETE_CONCURRENCY = 16
MISSING_DIGEST = "Missing required header for this request: Content-MD5 OR x-amz-checksum-*"


async def read_small_body(rq: S3Request, limit: int = SMALL_BODY_BYTES_MAX,
                          require_digest: str | None = None) -> bytes:
    """The whole (small) request body, checked against every digest the client sent.
    `require_digest`: the InvalidRequest message when it sent neither Content-MD5 nor a
    checksum (the operation needs one)."""
    body = RequestBody(rq.request, rq.auth, limit)
    if require_digest and not body.integrity_declared:
        raise S3Error("InvalidRequest", require_digest)
    md5 = new_md5()
    digests = body.digests
    chunks: list[bytes] = []
    async for chunk in body:
        md5.update(chunk)
        for d in digests:
            d.update(chunk)  # type: ignore[attr-defined]
        chunks.append(chunk)
    body.verify(md5.hexdigest())
    return b"".join(chunks)


async def _delete_one(rq: S3Request, entry: xml_parse.DeleteEntry,
                      ) -> tuple[str, str | None, bool, str | None] | tuple[str, str | None,
                                                                           str, str]:
    key, version_id = entry.key, entry.version_id
    try:
        if len(key.encode("utf-8")) > KEY_BYTES_MAX:
            raise S3Error("KeyTooLongError")
        if version_id is not None:  # the DELETE ?versionId= rule, answered per key
            check_version_id(version_id)
        await authz.authorize_key(rq, key, version_id)
        res = await delete_judged(rq, key, version_id, entry.conditions)
    except Exception as exc:  # noqa: BLE001 - reported per key, as AWS does
        err = to_s3_error(exc, rq.bucket, key)
        return key, version_id, err.code, err.message
    if version_id is None:
        return key, None, res.delete_marker, res.version_id if res.delete_marker else None
    return key, version_id, res.delete_marker, version_id if res.delete_marker else None


@operation("DeleteObjects")
async def delete_objects(rq: S3Request) -> web.StreamResponse:
    body = await read_small_body(rq, DELETE_BODY_BYTES_MAX, require_digest=(
        "Missing required header for this request: Content-Md5."))
    quiet, objects = xml_parse.parse_delete_objects(body)
    rq.existing_bucket()
    gate = asyncio.Semaphore(DELETE_CONCURRENCY)

    async def bounded(entry: xml_parse.DeleteEntry):  # type: ignore[no-untyped-def]
        async with gate:
            return await _delete_one(rq, entry)

    results = await asyncio.gather(*(bounded(e) for e in objects))
    deleted = [r for r in results if isinstance(r[2], bool)]
    errors = [r for r in results if not isinstance(r[2], bool)]
    # The access log's BATCH.DELETE.OBJECT records: (key, version id, error code or None).
    rq.request[LOG_BATCH] = [(r[0], r[1], None if isinstance(r[2], bool) else r[2])
                                  for r in results]
    return xml_response(xml.delete_result_xml([] if quiet else deleted, errors))  # type: ignore[arg-type]
