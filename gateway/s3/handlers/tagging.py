"""Object tagging: Get/Put/DeleteObjectTagging and the `x-amz-tagging` header of PutObject.

Tags live in the object version's record, so every version has its own tag set; a request
without `versionId` addresses the current version.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from aiohttp import web

from gateway.s3 import xml, xml_parse
from gateway.s3.errors import XML_FORBIDDEN, S3Error
from gateway.s3.handlers import S3Request, operation, xml_response
from gateway.s3.handlers.batch import read_small_body
from storage.records import ObjectVersion

OBJECT_TAGS_MAX = 10
TAG_HEADER_BYTES_MAX = 8192


def parse_tagging_header(value: str | None) -> dict[str, str]:
    """`x-amz-tagging: k1=v1&k2=v2` (URL-encoded query form) -> {k: v}, validated like AWS."""
    if not value:
        return {}
    if len(value) > TAG_HEADER_BYTES_MAX:
        raise S3Error("InvalidTag", "The TagValue you have provided is invalid")
    tags: dict[str, str] = {}
    for k, v in parse_qsl(value, keep_blank_values=True):
        # a character XML cannot carry was kept, then left out of GetObjectTagging's answer
        if not k or len(k) > xml.TAG_KEY_CHARS_MAX or XML_FORBIDDEN.search(k):
            raise S3Error("InvalidTag", "The TagKey you have provided is invalid")
        if len(v) > xml.TAG_VALUE_CHARS_MAX or XML_FORBIDDEN.search(v):
            raise S3Error("InvalidTag", "The TagValue you have provided is invalid")
        if k.startswith("aws:"):
            raise S3Error("InvalidTag", "Your TagKey cannot be prefixed with aws:")
        if k in tags:
            raise S3Error("InvalidTag", "Cannot provide multiple Tags with the same key")
        tags[k] = v
    if len(tags) > OBJECT_TAGS_MAX:
        raise S3Error("BadRequest", "Object tags cannot be greater than 10")
    return tags


async def addressed_version(rq: S3Request) -> tuple[ObjectVersion, bool]:
    """The addressed version (not a delete marker) and whether the bucket is versioned."""
    b = rq.existing_bucket()
    vid = rq.version_id
    v = await rq.cluster.objects.head(rq.existing_bucket(), rq.key, vid)
    if v.delete_marker:
        headers = {"x-amz-delete-marker": "true", "x-amz-version-id": v.version_id}
        if vid is not None:
            raise S3Error("MethodNotAllowed", headers={**headers, "Allow": "DELETE"},
                          Method=rq.request.method, ResourceType="DeleteMarker")
        raise S3Error("NoSuchKey", Key=rq.key, headers=headers)
    return v, bool(b.versioning)


def _version_header(v: ObjectVersion, versioned: bool) -> dict[str, str]:
    return {"x-amz-version-id": v.version_id} if versioned else {}


@operation("GetObjectTagging")
async def get_object_tagging(rq: S3Request) -> web.StreamResponse:
    v, versioned = await addressed_version(rq)
    # AWS returns an object's tags in key order, whatever order they were written in.
    return xml_response(xml.tagging_xml(dict(sorted(v.tags.items()))),
                        headers=_version_header(v, versioned))


@operation("PutObjectTagging")
async def put_object_tagging(rq: S3Request) -> web.StreamResponse:
    tags = xml_parse.parse_tagging(await read_small_body(rq), max_tags=OBJECT_TAGS_MAX)
    v, versioned = await addressed_version(rq)
    v = await rq.cluster.objects.update_version(rq.existing_bucket(), rq.key, v.version_id,
                                                tags=tags)
    return web.Response(status=200, headers=_version_header(v, versioned))


@operation("DeleteObjectTagging")
async def delete_object_tagging(rq: S3Request) -> web.StreamResponse:
    v, versioned = await addressed_version(rq)
    v = await rq.cluster.objects.update_version(rq.existing_bucket(), rq.key, v.version_id,
                                                tags={})
    return web.Response(status=204, headers=_version_header(v, versioned))
