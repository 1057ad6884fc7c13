"""Access-control operations: bucket and object ACLs, object ownership, public access block,
policy status; and `write_acl`, the ACL a write (PUT, copy, multipart, POST) gives its object.

ACL semantics are in `gateway.s3.acl`, how they authorize requests in `gateway.s3.authz`.
Stored in the bucket record's config: `acl`, `ownership` (ObjectOwnership), and
`public_access_block` (the four flags); an object's ACL lives in its version record.
"""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree as ET

from aiohttp import web

from gateway.s3 import acl as acls
from gateway.s3 import authz, policy
from gateway.s3.errors import S3Error, xml_document
from gateway.s3.handlers import (
    S3Request,
    bucket_setting,
    clearing_operation,
    operation,
    xml_response,
)
from gateway.s3.handlers.batch import read_small_body
from gateway.s3.handlers.tagging import addressed_version
from gateway.s3.xml import S3_NAMESPACE
from gateway.s3.xml_parse import find_all, find_text, only_children, parse_document
from storage.records import Bucket

OWNERSHIP_MODES = ("BucketOwnerEnforced", "BucketOwnerPreferred", "ObjectWriter")
PAB_FLAGS = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy",
             "RestrictPublicBuckets")
_ENFORCED_OK = (None, "bucket-owner-full-control")


def _has_acl_headers(rq: S3Request) -> bool:
    return "x-amz-acl" in rq.headers or any(h in rq.headers for h in acls.GRANT_HEADERS)


def _check_enforced(b: Bucket, rq: S3Request, *, bucket_acl: bool = False) -> None:
    """BucketOwnerEnforced disables ACLs: only none or bucket-owner-full-control pass."""
    if authz.ownership(b) != "BucketOwnerEnforced":
        return
    if any(h in rq.headers for h in acls.GRANT_HEADERS) or bucket_acl or (
            rq.headers.get("x-amz-acl") not in _ENFORCED_OK):
        raise S3Error("AccessControlListNotSupported")


async def _check_public(rq: S3Request, b: Bucket, acl: acls.Acl) -> None:
    if acl.is_public() and (await authz.public_access_block(rq.cluster, b)).get(
            "BlockPublicAcls"):
        raise S3Error("AccessDenied")


async def write_acl(rq: S3Request) -> dict[str, Any]:
    """The ACL record of an object this request writes (owner per ObjectOwnership)."""
    b = rq.existing_bucket()
    _check_enforced(b, rq)
    owner = authz.object_owner(rq.requester, b, rq.headers.get("x-amz-acl"))
    if owner != b.tenant and not b.config.get("foreign_objects"):
        # remembered so the bucket's tenant is checked against such objects' ACLs
        await rq.cluster.buckets.update(rq.tenant, rq.bucket, foreign_objects=True)
    acl = await acls.from_headers(rq.headers, rq.cluster.tenants, owner, b.tenant,
                                  for_object=True)
    if acl is None:
        return {} if owner == b.tenant else acls.private(owner).record()
    await _check_public(rq, b, acl)
    return authz.stored_acl(acl, b.tenant)


async def create_bucket_config(rq: S3Request) -> dict[str, Any]:
    """The access settings CreateBucket headers ask for (ACL, x-amz-object-ownership)."""
    mode = rq.headers.get("x-amz-object-ownership")
    if mode is not None and mode not in OWNERSHIP_MODES:
        raise S3Error("InvalidArgument", "Invalid x-amz-object-ownership header",
                      ArgumentName="x-amz-object-ownership", ArgumentValue=mode)
    assert rq.requester is not None
    acl = await acls.from_headers(rq.headers, rq.cluster.tenants, rq.requester)
    if mode == "BucketOwnerEnforced" and acl is not None and not acl.is_private_default():
        raise S3Error("InvalidBucketAclWithObjectOwnership", "Bucket cannot have ACLs set "
                      "with ObjectOwnership's BucketOwnerEnforced setting", status=400)
    config: dict[str, Any] = {}
    if mode is not None:
        config["ownership"] = mode
    config["acl"] = authz.stored_acl(acl, rq.requester) if acl is not None else None
    return config


async def _acl_from_request(rq: S3Request, owner: str, bucket_owner: str | None,
                            for_object: bool) -> acls.Acl:
    body = await read_small_body(rq)
    acl = await acls.from_headers(rq.headers, rq.cluster.tenants, owner, bucket_owner,
                                  for_object=for_object)
    if acl is not None:
        if body.strip():
            raise S3Error("UnexpectedContent", "This request does not support content")
        return acl
    if not body.strip():
        raise S3Error("MissingSecurityHeader", "Your request was missing a required header",
                      MissingHeaderName="x-amz-acl")
    return await acls.from_xml(body, rq.cluster.tenants, owner)


@operation("GetBucketAcl")
async def get_bucket_acl(rq: S3Request) -> web.StreamResponse:
    b = rq.existing_bucket()
    return xml_response(await acls.to_xml(acls.Acl.of(b.config.get("acl"), b.tenant),
                                          rq.cluster.tenants))


@operation("PutBucketAcl")
async def put_bucket_acl(rq: S3Request) -> web.StreamResponse:
    b = rq.existing_bucket()
    _check_enforced(b, rq, bucket_acl=True)
    acl = await _acl_from_request(rq, b.tenant, None, for_object=False)
    await _check_public(rq, b, acl)
    await rq.cluster.buckets.update(rq.tenant, rq.bucket, acl=authz.stored_acl(acl, b.tenant)
                                    or None)
    return web.Response(status=200)


@operation("GetObjectAcl")
async def get_object_acl(rq: S3Request) -> web.StreamResponse:
    v, versioned = await addressed_version(rq)
    headers = {"x-amz-version-id": v.version_id} if versioned else {}
    return xml_response(await acls.to_xml(acls.Acl.of(v.acl, v.tenant), rq.cluster.tenants),
                        headers=headers)


@operation("PutObjectAcl")
async def put_object_acl(rq: S3Request) -> web.StreamResponse:
    b = rq.existing_bucket()
    v, versioned = await addressed_version(rq)
    _check_enforced(b, rq, bucket_acl=True)
    owner = acls.Acl.of(v.acl, v.tenant).owner
    acl = await _acl_from_request(rq, owner, b.tenant, for_object=True)
    await _check_public(rq, b, acl)
    await rq.cluster.objects.update_version(rq.existing_bucket(), rq.key, v.version_id,
                                            acl=authz.stored_acl(acl, b.tenant))
    headers = {"x-amz-version-id": v.version_id} if versioned else {}
    return web.Response(status=200, headers=headers)


# --- object ownership ----------------------------------------------------------------------


def _doc(root_tag: str) -> ET.Element:
    return ET.Element(root_tag, {"xmlns": S3_NAMESPACE})


@operation("PutBucketOwnershipControls")
async def put_ownership(rq: S3Request) -> web.StreamResponse:
    root = parse_document(await read_small_body(rq), "OwnershipControls")
    only_children(root, (), ("Rule",))
    rules = find_all(root, "Rule")
    for r in rules:
        only_children(r, ("ObjectOwnership",))
    modes = [find_text(r, "ObjectOwnership") for r in rules]
    if len(modes) != 1 or modes[0] not in OWNERSHIP_MODES:
        raise S3Error("MalformedXML")
    b = rq.existing_bucket()
    if modes[0] == "BucketOwnerEnforced" and not acls.Acl.of(
            b.config.get("acl"), b.tenant).is_private_default():
        raise S3Error("InvalidBucketAclWithObjectOwnership", "Bucket cannot have ACLs set "
                      "with ObjectOwnership's BucketOwnerEnforced setting", status=400)
    await rq.cluster.buckets.update(rq.tenant, rq.bucket, ownership=modes[0])
    return web.Response(status=200)


@operation("GetBucketOwnershipControls")
async def get_ownership(rq: S3Request) -> web.StreamResponse:
    mode = await bucket_setting(rq, "ownership", "OwnershipControlsNotFoundError")
    root = _doc("OwnershipControls")
    ET.SubElement(ET.SubElement(root, "Rule"), "ObjectOwnership").text = str(mode)
    return xml_response(xml_document(root))


clearing_operation("DeleteBucketOwnershipControls", "ownership")


# --- public access block and policy status -------------------------------------------------


@operation("PutPublicAccessBlock")
async def put_public_access_block(rq: S3Request) -> web.StreamResponse:
    root = parse_document(await read_small_body(rq), "PublicAccessBlockConfiguration")
    only_children(root, PAB_FLAGS)  # a misspelt flag would read as false: blocking nothing
    conf = {}
    for flag in PAB_FLAGS:
        text = find_text(root, flag)
        if text is not None and text.strip().lower() not in ("true", "false"):
            raise S3Error("MalformedXML")
        conf[flag] = text is not None and text.strip().lower() == "true"
    await rq.cluster.buckets.update(rq.tenant, rq.bucket, public_access_block=conf)
    return web.Response(status=200)


@operation("GetPublicAccessBlock")
async def get_public_access_block(rq: S3Request) -> web.StreamResponse:
    conf = await bucket_setting(rq, "public_access_block",
                                "NoSuchPublicAccessBlockConfiguration")
    root = _doc("PublicAccessBlockConfiguration")
    for flag in PAB_FLAGS:
        ET.SubElement(root, flag).text = "true" if conf.get(flag) else "false"
    return xml_response(xml_document(root))


clearing_operation("DeletePublicAccessBlock", "public_access_block")


@operation("GetBucketPolicyStatus")
async def get_policy_status(rq: S3Request) -> web.StreamResponse:
    """IsPublic: a public policy (unless RestrictPublicBuckets) or public ACL grants
    (unless IgnorePublicAcls)."""
    b = rq.existing_bucket()
    pab = await authz.public_access_block(rq.cluster, b)
    text = b.config.get("policy")
    public = (not pab.get("RestrictPublicBuckets") and policy.is_public(
        str(text) if text else None)) or (not pab.get("IgnorePublicAcls") and acls.Acl.of(
            b.config.get("acl"), b.tenant).is_public())
    root = _doc("PolicyStatus")
    ET.SubElement(root, "IsPublic").text = "true" if public else "false"
    return xml_response(xml_document(root))


async def check_policy_allowed(rq: S3Request, b: Bucket, text: str) -> None:
    """PutBucketPolicy: validated and refused when public under BlockPublicPolicy."""
    policy.validate(text, b.name)
    if (await authz.public_access_block(rq.cluster, b)).get("BlockPublicPolicy") and \
            policy.is_public(text):
        raise S3Error("AccessDenied")
