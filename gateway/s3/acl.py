"""S3 access control lists: canned ACLs, grant headers, AccessControlPolicy XML, checks.

An ACL is kept as a plain record `{"owner": tenant, "grants": [[kind, who, permission]]}`
(bucket config `acl`, object version `acl`): `kind` is "user" (`who` is a tenant name,
resolved from a canonical id or email when the ACL is set, so renaming a canonical id never
orphans a grant) or "group" (`who` is the group URI). An empty record is the `private`
default: the resource's tenant owns it with FULL_CONTROL.

Grants are answered groups first, then users, each in the order they were given.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree as ET

from gateway.s3.errors import S3Error, xml_document
from gateway.s3.request_keys import OWNERS
from gateway.s3.xml import S3_NAMESPACE
from gateway.s3.xml_parse import find_all, find_text, local_name, only_children, parse_document
from storage.records import ObjectVersion
from storage.tenants import TenantService

if TYPE_CHECKING:
    from gateway.s3.handlers import S3Request

ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
AUTHENTICATED_USERS = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"
LOG_DELIVERY = "http://acs.amazonaws.com/groups/s3/LogDelivery"
GROUPS = (ALL_USERS, AUTHENTICATED_USERS, LOG_DELIVERY)
PUBLIC_GROUPS = (ALL_USERS, AUTHENTICATED_USERS)
PERMISSIONS = ("FULL_CONTROL", "READ", "WRITE", "READ_ACP", "WRITE_ACP")
GRANT_HEADERS = {"x-amz-grant-read": "READ", "x-amz-grant-write": "WRITE",
                 "x-amz-grant-read-acp": "READ_ACP", "x-amz-grant-write-acp": "WRITE_ACP",
                 "x-amz-grant-full-control": "FULL_CONTROL"}
BUCKET_CANNED = ("private", "public-read", "public-read-write", "authenticated-read",
                 "log-delivery-write")
OBJECT_CANNED = ("private", "public-read", "public-read-write", "authenticated-read",
                 "bucket-owner-read", "bucket-owner-full-control", "aws-exec-read")
XSI = "http://www.w3.org/2001/XMLSchema-instance"
_GRANT_ITEM = re.compile(r'\s*(id|uri|emailAddress)\s*=\s*("([^"]*)"|[^,]*)\s*(,|$)')


@dataclass
class Acl:
    """An ACL: its owner (a tenant name) and grants (kind, who, permission)."""

    owner: str
    grants: list[tuple[str, str, str]] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        return {"owner": self.owner, "grants": [list(g) for g in self.grants]}

    @classmethod
    def of(cls, rec: Mapping[str, Any] | None, default_owner: str) -> Acl:
        """The ACL a stored record holds; the private default when it holds none."""
        if not rec:
            return private(default_owner)
        return cls(str(rec.get("owner") or default_owner),
                   [(str(k), str(w), str(p)) for k, w, p in rec.get("grants", [])])

    def allows(self, requester: str | None, permission: str, *,
               ignore_public: bool = False) -> bool:
        """Whether a grant gives `requester` (a tenant, None if anonymous) `permission`."""
        for kind, who, perm in self.grants:
            if perm not in (permission, "FULL_CONTROL"):
                continue
            if kind == "user" and requester is not None and who == requester:
                return True
            if kind == "group" and not ignore_public and (
                    who == ALL_USERS or (who == AUTHENTICATED_USERS and requester is not None)):
                return True
        return False

    def is_public(self) -> bool:
        return any(kind == "group" and who in PUBLIC_GROUPS for kind, who, _ in self.grants)

    def is_private_default(self) -> bool:
        return self.grants == [("user", self.owner, "FULL_CONTROL")]


def private(owner: str) -> Acl:
    return Acl(owner, [("user", owner, "FULL_CONTROL")])


def canned(name: str, owner: str, bucket_owner: str | None = None, *,
           for_object: bool = False) -> Acl:
    """Expand a canned ACL; InvalidArgument for a name S3 does not know for the resource."""
    if name not in (OBJECT_CANNED if for_object else BUCKET_CANNED):
        raise S3Error("InvalidArgument", None, ArgumentName="x-amz-acl", ArgumentValue=name)
    groups: list[tuple[str, str, str]] = []
    if name in ("public-read", "public-read-write"):
        groups.append(("group", ALL_USERS, "READ"))
    if name == "public-read-write":
        groups.append(("group", ALL_USERS, "WRITE"))
    if name == "authenticated-read":
        groups.append(("group", AUTHENTICATED_USERS, "READ"))
    if name == "log-delivery-write":
        groups += [("group", LOG_DELIVERY, "WRITE"), ("group", LOG_DELIVERY, "READ_ACP")]
    users = [("user", owner, "FULL_CONTROL")]
    if bucket_owner and bucket_owner != owner:
        if name == "bucket-owner-read":
            users.append(("user", bucket_owner, "READ"))
        elif name == "bucket-owner-full-control":
            users.append(("user", bucket_owner, "FULL_CONTROL"))
    return Acl(owner, groups + users)


async def _grantee(tenants: TenantService, kind: str, value: str) -> tuple[str, str]:
    """(kind, who) for a grantee named by canonical id, email or group URI."""
    if kind == "id":
        t = await tenants.by_canonical_id(value)
        if t is None:
            raise S3Error("InvalidArgument", "Invalid id", ArgumentName="CanonicalUser/ID",
                          ArgumentValue=value)
        return "user", t.name
    if kind == "emailAddress":
        t = await tenants.by_email(value)
        if t is None:
            raise S3Error("UnresolvableGrantByEmailAddress")
        return "user", t.name
    if value not in GROUPS:
        raise S3Error("InvalidArgument", "Invalid group uri", ArgumentName="Group/URI",
                      ArgumentValue=value)
    return "group", value


async def from_headers(headers: Mapping[str, str], tenants: TenantService, owner: str,
                       bucket_owner: str | None = None, *, for_object: bool = False,
                       ) -> Acl | None:
    """The ACL an `x-amz-acl` or `x-amz-grant-*` header sets, None when there is none."""
    name = headers.get("x-amz-acl")
    present = [h for h in GRANT_HEADERS if h in headers]
    if name is not None and present:
        raise S3Error("InvalidRequest", "Specifying both Canned ACLs and Header Grants is not "
                      "allowed")
    if name is not None:
        return canned(name.strip(), owner, bucket_owner, for_object=for_object)
    if not present:
        return None
    grants: list[tuple[str, str, str]] = []
    for h in present:
        text = headers[h]
        pos = 0
        while pos < len(text):
            m = _GRANT_ITEM.match(text, pos)
            if m is None or m.end() == pos:
                raise S3Error("InvalidArgument", "Invalid grant header", ArgumentName=h,
                              ArgumentValue=text)
            value = m.group(3) if m.group(3) is not None else m.group(2).strip()
            kind, who = await _grantee(tenants, m.group(1), value)
            grants.append((kind, who, GRANT_HEADERS[h]))
            pos = m.end()
    return Acl(owner, _ordered(grants))


def _ordered(grants: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    return [g for g in grants if g[0] == "group"] + [g for g in grants if g[0] != "group"]


def _schema(root: ET.Element) -> None:
    """MalformedACLError (AWS's code for an ACL document) for an element AccessControlPolicy's
    schema does not have: a misspelt Grant was dropped and the other grants applied."""
    try:
        only_children(root, ("Owner", "AccessControlList"))
        for owner in find_all(root, "Owner"):
            only_children(owner, ("ID", "DisplayName"))
        for acl in find_all(root, "AccessControlList"):
            only_children(acl, (), ("Grant",))
            for grant in find_all(acl, "Grant"):
                only_children(grant, ("Grantee", "Permission"))
                for grantee in find_all(grant, "Grantee"):
                    only_children(grantee, ("ID", "DisplayName", "EmailAddress", "URI"))
    except S3Error:
        raise S3Error("MalformedACLError") from None


async def from_xml(body: bytes, tenants: TenantService, owner: str) -> Acl:
    """Parse an AccessControlPolicy; its Owner, when given, must be the resource's owner."""
    root = parse_document(body, "AccessControlPolicy")
    _schema(root)
    owners = find_all(root, "Owner")
    if owners:
        oid = find_text(owners[0], "ID")
        own_id, _ = await tenants.identity(owner)
        if oid is not None and oid != own_id:
            raise S3Error("AccessDenied")
    lists = find_all(root, "AccessControlList")
    if len(lists) != 1:
        raise S3Error("MalformedACLError")
    grants: list[tuple[str, str, str]] = []
    for g in find_all(lists[0], "Grant"):
        grantees = find_all(g, "Grantee")
        perm = find_text(g, "Permission")
        if len(grantees) != 1 or perm not in PERMISSIONS:
            raise S3Error("MalformedACLError")
        ge = grantees[0]
        xtype = next((v for k, v in ge.attrib.items() if local_name(k) == "type"), None)
        if xtype == "CanonicalUser" or (xtype is None and find_text(ge, "ID")):
            kind, value = "id", find_text(ge, "ID")
        elif xtype == "AmazonCustomerByEmail" or (xtype is None and find_text(ge, "EmailAddress")):
            kind, value = "emailAddress", find_text(ge, "EmailAddress")
        elif xtype == "Group" or (xtype is None and find_text(ge, "URI")):
            kind, value = "uri", find_text(ge, "URI")
        else:
            raise S3Error("MalformedACLError")
        if not value:
            raise S3Error("MalformedACLError")
        who = await _grantee(tenants, kind, value)
        grants.append((*who, perm))
    return Acl(owner, _ordered(grants))


async def to_xml(acl: Acl, tenants: TenantService) -> bytes:
    """Get(Bucket|Object)Acl's AccessControlPolicy document."""
    root = ET.Element("AccessControlPolicy", {"xmlns": S3_NAMESPACE})
    owner = ET.SubElement(root, "Owner")
    oid, oname = await tenants.identity(acl.owner)
    ET.SubElement(owner, "ID").text = oid
    ET.SubElement(owner, "DisplayName").text = oname
    lst = ET.SubElement(root, "AccessControlList")
    for kind, who, perm in _ordered(acl.grants):
        grant = ET.SubElement(lst, "Grant")
        if kind == "group":
            ge = ET.SubElement(grant, "Grantee", {"xmlns:xsi": XSI, "xsi:type": "Group"})
            ET.SubElement(ge, "URI").text = who
        else:
            gid, gname = await tenants.identity(who)
            ge = ET.SubElement(grant, "Grantee", {"xmlns:xsi": XSI,
                                                  "xsi:type": "CanonicalUser"})
            ET.SubElement(ge, "ID").text = gid
            ET.SubElement(ge, "DisplayName").text = gname
        ET.SubElement(grant, "Permission").text = perm
    return xml_document(root)


def owner_of(v: ObjectVersion) -> str:
    """The tenant owning an object version (its writer, or the bucket's tenant)."""
    return str((v.acl or {}).get("owner") or v.tenant)


async def resolve_owners(rq: S3Request, versions: Iterable[ObjectVersion]) -> None:
    """Look up the (canonical id, display name) of the owners of listed versions, kept in
    `rq.request[OWNERS]` for the listing's Owner elements."""
    owners: dict[str, tuple[str, str]] = {}
    for v in versions:
        t = owner_of(v)
        if t not in owners:
            owners[t] = await rq.cluster.tenants.identity(t)
    rq.request[OWNERS] = owners
