"""`tessera kms create|list`: a tenant's named KMS keys (SSE-KMS), over the admin API.

`tessera kms create NAME` makes a key with the alias `alias/NAME` (plus any `--alias`), a
random UUID key id unless `--id` gives one, and prints its id and ARN; `tessera kms list`
prints the tenant's keys as a table (`--json` for scripts). S3 clients name a key by id,
ARN, alias name or alias ARN in `x-amz-server-side-encryption-aws-kms-key-id`.
"""

from __future__ import annotations

import argparse
import urllib.parse
from typing import Any

from ops.admincli import _emit, admin_request, one_line_errors, table

KMS_COLS = [("key_id", "key id"), ("aliases", "aliases"), ("arn", "arn"),
            ("state", "state"), ("created", "created")]


def _kms(a: argparse.Namespace) -> None:
    path = f"/tenants/{urllib.parse.quote(a.tenant)}/kms-keys"
    if a.action == "create":
        body: dict[str, Any] = {"aliases": [a.name, *a.alias]}
        if a.id is not None:
            body["key_id"] = a.id
        if a.description:
            body["description"] = a.description
        r = admin_request("POST", path, body)
        _emit(a, r, table([r], KMS_COLS))
    elif a.action == "list":
        r = admin_request("GET", path)
        _emit(a, r, table(r["keys"], KMS_COLS))


def add_kms_parser(sub: Any) -> None:
    """Add the `kms` subcommand to the `tessera` parser."""
    js = argparse.ArgumentParser(add_help=False)
    js.add_argument("--json", action="store_true", help="print JSON instead of a table")
    js.add_argument("--tenant", default="default", help="the tenant that owns the keys")
    k = sub.add_parser("kms", help="manage a tenant's named KMS keys for SSE-KMS (admin API)")
    ks = k.add_subparsers(dest="action", required=True)
    c = ks.add_parser("create", help="create a KMS key with the alias alias/NAME",
                      parents=[js])
    c.add_argument("name", help="the key's alias (alias/NAME)")
    c.add_argument("--alias", action="append", default=[], metavar="ALIAS",
                   help="another alias (alias/X or X); repeatable")
    c.add_argument("--id", default=None, metavar="UUID",
                   help="the key id (default: a random UUID)")
    c.add_argument("--description", default="", help="free text kept with the key")
    ks.add_parser("list", help="list the tenant's KMS keys", parents=[js])
    k.set_defaults(func=one_line_errors(_kms))
