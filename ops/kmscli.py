"""`tessera kms create|list|disable|enable|delete|cancel-deletion`: a tenant's named KMS keys
(SSE-KMS), over the admin API.

`tessera kms create NAME` makes a key with the alias `alias/NAME` (plus any `--alias`), a
random UUID key id unless `--id` gives one, and prints its id and ARN; `tessera kms list`
prints the tenant's keys as a table (`--json` for scripts). S3 clients name a key by id,
ARN, alias name or alias ARN in `x-amz-server-side-encryption-aws-kms-key-id`.

`disable` / `enable` NAME stop and restore every use of a key (its objects can be neither
written nor read while it is disabled); `delete NAME` schedules its deletion after
`--days` (7-30, default 30; `--wait-s` sets seconds instead, 0 deletes now), after which its
objects are unreadable for good; `cancel-deletion NAME` before then leaves it disabled.
NAME is the alias given to `create`, or any name S3 clients use.
"""

from __future__ import annotations

import argparse
import urllib.parse
from typing import Any

from ops.admincli import _emit, admin_request, config_option, one_line_errors, table

KMS_COLS = [("key_id", "key id"), ("aliases", "aliases"), ("arn", "arn"),
            ("state", "state"), ("created", "created")]
STATE_COLS = [("key_id", "key id"), ("aliases", "aliases"), ("state", "state"),
              ("deletion_date", "deletion date")]


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
    else:
        body = {"key": a.name}
        action = {"delete": "schedule-deletion"}.get(a.action, a.action)
        if a.action == "delete":
            if a.wait_s is not None:
                body["wait_s"] = a.wait_s
            else:
                body["pending_window_days"] = a.days
        r = admin_request("POST", f"{path}/{action}", body)
        _emit(a, r, table([r], STATE_COLS))


def _window_days(text: str) -> int:
    """`--days` as AWS KMS's PendingWindowInDays, 7-30: a usage error naming the flag, not
    the admin API's field name after a round trip (newuser16)."""
    try:
        days = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number of days {text!r}") from None
    if not 7 <= days <= 30:
        raise argparse.ArgumentTypeError(f"{days} is not from 7 to 30 days")
    return days


def add_kms_parser(sub: Any) -> None:
    """Add the `kms` subcommand to the `tessera` parser."""
    js = argparse.ArgumentParser(add_help=False, parents=[config_option()])
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
    for action, text in (("disable", "disable a key: its objects can be neither written nor "
                          "read until it is enabled"),
                         ("enable", "enable a disabled key"),
                         ("delete", "schedule a key's deletion (its objects become "
                          "unreadable for good)"),
                         ("cancel-deletion", "cancel a scheduled deletion (the key stays "
                          "disabled)")):
        p = ks.add_parser(action, help=text, parents=[js])
        p.add_argument("name", help="the key: its alias (as given to create), id or ARN")
        if action == "delete":
            p.add_argument("--days", type=_window_days, default=30,
                           help="waiting period in days, 7 to 30 (default 30), as AWS KMS")
            p.add_argument("--wait-s", type=float, default=None, dest="wait_s",
                           help="waiting period in seconds instead (0: delete now)")
    k.set_defaults(func=one_line_errors(_kms))
