"""Listing: ListObjectsV2, ListObjects (v1) and ListObjectVersions."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime

from aiohttp import web

from gateway.s3 import xml
from gateway.s3.acl import owner_of, resolve_owners
from gateway.s3.errors import S3Error
from gateway.s3.handlers import S3Request, operation, xml_response
from gateway.s3.handlers.restore import restore_status
from gateway.s3.http import count_param, iso_time
from gateway.s3.request_keys import OWNERS
from gateway.s3.router import check_version_id
from storage.records import ObjectVersion

MAX_KEYS = 1000
OPTIONAL_ATTRIBUTES = "x-amz-optional-object-attributes"


def _max_keys(rq: S3Request) -> int:
    return count_param(rq.params, "max-keys", MAX_KEYS, MAX_KEYS)


def _encoding(rq: S3Request) -> str | None:
    enc = rq.params.get("encoding-type")
    if enc is not None and enc != "url":
        raise S3Error("InvalidArgument", "Invalid Encoding Method specified in Request",
                      ArgumentName="encoding-type", ArgumentValue=enc)
    return enc


def _optional_attributes(rq: S3Request) -> bool:
    """Whether `x-amz-optional-object-attributes` asks for RestoreStatus (its one value on
    AWS); any other name is 400 InvalidArgument."""
    raw = rq.headers.get(OPTIONAL_ATTRIBUTES)
    if raw is None:
        return False
    names = [n.strip() for n in raw.split(",") if n.strip()]
    for n in names:
        if n != "RestoreStatus":
            raise S3Error("InvalidArgument", "Invalid attribute name specified.",
                          ArgumentName=OPTIONAL_ATTRIBUTES, ArgumentValue=n)
    return bool(names)


def _restore_status(v: ObjectVersion) -> tuple[bool, datetime | None] | None:
    status = None if v.delete_marker else restore_status(v)
    if status is None:
        return None
    return status[0], iso_time(status[1]) if status[1] is not None else None


def _entry(rq: S3Request, v: ObjectVersion, owner: bool, latest: bool = True,
           restore: bool = False) -> xml.ListEntry:
    return xml.ListEntry(
        restore_status=_restore_status(v) if restore else None,
        key=v.key, last_modified=iso_time(v.last_modified), etag=v.etag, size=v.size,
        storage_class=v.storage_class, owner=rq.request[OWNERS][owner_of(v)] if owner else None,
        version_id=v.version_id, is_latest=latest, is_delete_marker=v.delete_marker,
        checksum_algorithm=next(iter(v.checksums), None),
        checksum_type=(v.checksum_type or "FULL_OBJECT") if v.checksums else None)


def page_token(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode("utf-8", "surrogateescape")).decode()


def read_token(token: str) -> str:
    """The key a continuation token stands for; a token that is not base64 of a UTF-8 key
    (no key is anything else) is AWS's InvalidArgument, never a key that cannot be packed."""
    try:
        return base64.urlsafe_b64decode(token.encode()).decode("utf-8")
    except (binascii.Error, ValueError):
        raise S3Error("InvalidArgument", "The continuation token provided is incorrect",
                      ArgumentName="continuation-token", ArgumentValue=token) from None


async def _list(rq: S3Request, prefix: str, delimiter: str, after: str, max_keys: int,
                ) -> tuple[list[ObjectVersion], list[str], bool, str]:
    """One page of the listing; max-keys=0 is an empty, untruncated page, as on AWS."""
    if max_keys == 0:
        rq.existing_bucket()
        return [], [], False, ""
    return await rq.cluster.objects.listing.list(rq.existing_bucket(), prefix, delimiter,
                                                 after, max_keys)


async def _list_versions(rq: S3Request, prefix: str, key_marker: str, vid_marker: str,
                         max_keys: int, delimiter: str,
                         ) -> tuple[list[ObjectVersion], list[str], bool, str]:
    """One page of versions; max-keys=0 is an empty, untruncated page, as `_list` answers
    it (a truncated page without a NextKeyMarker sent a client back to the start)."""
    if max_keys == 0:
        rq.existing_bucket()
        return [], [], False, ""
    return await rq.cluster.objects.listing.list_versions(
        rq.existing_bucket(), prefix, key_marker, vid_marker, max_keys, delimiter)


@operation("ListObjectsV2")
async def list_objects_v2(rq: S3Request) -> web.StreamResponse:
    p = rq.params
    max_keys = _max_keys(rq)
    enc = _encoding(rq)
    restore = _optional_attributes(rq)
    prefix, delimiter = p.get("prefix", ""), p.get("delimiter", "")
    token = p.get("continuation-token")
    # With a continuation token, start-after is ignored (AWS: it only applies to the first
    # request; SDKs repeat it on every page).
    after = read_token(token) if token is not None else p.get("start-after", "")
    objs, prefixes, more, last = await _list(rq, prefix, delimiter, after, max_keys)
    await resolve_owners(rq, objs)
    page = xml.ListingPage(
        name=rq.bucket, prefix=prefix, delimiter=delimiter or None, max_keys=max_keys,
        is_truncated=more, contents=[_entry(rq, v, "fetch-owner" in p and
                                            p["fetch-owner"] == "true", restore=restore)
                                     for v in objs],
        common_prefixes=prefixes, encoding_type=enc,
        continuation_token=token, next_continuation_token=page_token(last) if more else None,
        start_after=p.get("start-after"), fetch_owner=p.get("fetch-owner") == "true")
    return xml_response(xml.list_objects_v2_xml(page))


@operation("ListObjects")
async def list_objects(rq: S3Request) -> web.StreamResponse:
    p = rq.params
    if "start-after" in p:  # a V2 parameter: AWS refuses it rather than list from the start
        raise S3Error("InvalidArgument", "startAfter only supported in REST.GET.BUCKET with "
                      "list-type=2")
    max_keys = _max_keys(rq)
    enc = _encoding(rq)
    restore = _optional_attributes(rq)
    prefix, delimiter, marker = p.get("prefix", ""), p.get("delimiter", ""), p.get("marker", "")
    objs, prefixes, more, last = await _list(rq, prefix, delimiter, marker, max_keys)
    await resolve_owners(rq, objs)
    page = xml.ListingPage(
        name=rq.bucket, prefix=prefix, delimiter=delimiter or None, max_keys=max_keys,
        is_truncated=more, contents=[_entry(rq, v, True, restore=restore) for v in objs],
        common_prefixes=prefixes, encoding_type=enc, marker=marker,
        next_marker=last if more and delimiter else None)
    return xml_response(xml.list_objects_v1_xml(page))


@operation("ListObjectVersions")
async def list_object_versions(rq: S3Request) -> web.StreamResponse:
    p = rq.params
    max_keys = _max_keys(rq)
    enc = _encoding(rq)
    restore = _optional_attributes(rq)
    prefix, delimiter = p.get("prefix", ""), p.get("delimiter", "")
    key_marker, vid_marker = p.get("key-marker", ""), p.get("version-id-marker", "")
    if vid_marker and not key_marker:
        raise S3Error("InvalidArgument", "A version-id marker cannot be specified without a "
                      "key marker.", ArgumentName="version-id-marker", ArgumentValue=vid_marker)
    if vid_marker:  # a malformed one is refused as S3 does, not taken as a position
        check_version_id(vid_marker, "version-id-marker")
    versions, prefixes, more, last_key = await _list_versions(rq, prefix, key_marker,
                                                            vid_marker, max_keys, delimiter)
    await resolve_owners(rq, versions)
    entries = []
    seen: set[str] = set()
    for v in versions:
        latest = v.key not in seen and (v.key != key_marker or not vid_marker)
        if latest and key_marker == v.key:
            latest = await rq.cluster.objects.is_latest(v)
        seen.add(v.key)
        entries.append(_entry(rq, v, True, latest, restore=restore))
    last = versions[-1] if versions and versions[-1].key == last_key else None
    page = xml.ListingPage(
        name=rq.bucket, prefix=prefix, delimiter=delimiter or None, max_keys=max_keys,
        is_truncated=more, contents=entries, common_prefixes=prefixes, encoding_type=enc,
        key_marker=key_marker, version_id_marker=vid_marker,
        next_key_marker=last_key if more and last_key else None,
        next_version_id_marker=last.version_id if more and last else None)
    return xml_response(xml.list_object_versions_xml(page))
