"""`tessera tenant ...` and `tessera key ...`: the admin CLI over the admin API.

Reads TESSERA_ADMIN_URL, TESSERA_ADMIN_ACCESS_KEY and TESSERA_ADMIN_SECRET_KEY from the
environment (as written to tessera.env by `tessera up`), signs each request with SigV4, and
prints a table by default or JSON with --json. Failures are one plain line on stderr.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import secrets
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from storage.config import ENV_ADMIN_ACCESS_KEY as ENV_AK
from storage.config import ENV_ADMIN_SECRET_KEY as ENV_SK
from storage.config import ENV_ADMIN_URL as ENV_URL

TIMEOUT_S = 30.0


class CliError(Exception):
    """A failure shown to the operator as one line."""


class Unavailable(CliError):
    """The admin API could not be reached or answered 502/503/504: perhaps only for now
    (a gateway restarting); a command that polls may try again (`node drain --wait`)."""


_CONFIG_ENV: list[dict[str, str] | None] = [None]  # this command's `--config` (`use_config`)


def use_config(config: str | None) -> None:
    """Send this process's admin requests to the cluster of `--config FILE` (if given)."""
    _CONFIG_ENV[0] = config_env(config)


# what an operator does about an admin credential the API refused
_CREDENTIAL_HINTS = {
    code: f"; {name} is not the cluster's admin credential: load DATA/tessera.env again "
          "(set -a; . DATA/tessera.env; set +a)"
    for code, name in (("SignatureDoesNotMatch", ENV_SK), ("InvalidAccessKeyId", ENV_AK))}


def config_env(config: str | None) -> dict[str, str] | None:
    """The admin endpoint and credential of the cluster `--config FILE` describes (None
    without one: the environment's): the URL from its `[gateway] admin_listen`, the
    credential from the `tessera.env` `tessera up` wrote beside its data, else the
    environment's. A CliError naming the file when it cannot be read."""
    if not config:
        return None
    from pathlib import Path

    from ops.envfile import read_env
    from storage.config import load_config
    from storage.errors import ConfigError

    try:
        cfg = load_config(Path(config))
    except (ConfigError, OSError, ValueError) as exc:  # ValueError: TOML that does not parse
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CliError(f"--config {config}: {why}") from None
    env = dict(os.environ)
    try:
        saved = read_env(cfg.data_dir)
    except OSError:
        saved = {}  # a cluster not made by `tessera up`: the credential from the environment
    for name in (ENV_AK, ENV_SK):
        if saved.get(name):
            env[name] = saved[name]
    env[ENV_URL] = f"http://{cfg.gateway.admin_listen}"
    return env


def admin_request(method: str, path: str, body: dict[str, Any] | None = None,
                  query: dict[str, str] | None = None,
                  env: dict[str, str] | None = None) -> dict[str, Any]:
    """Sign and send one admin API request; the parsed JSON answer or CliError. `env`
    replaces the environment (`config_env`); by default, `--config` of the command being
    run (`use_config`) or the environment."""
    from gateway.s3.sigv4_sign import sign_headers

    env = dict(env if env is not None else _CONFIG_ENV[0] or os.environ)
    missing = [n for n in (ENV_URL, ENV_AK, ENV_SK) if not env.get(n)]
    if missing:
        raise CliError(f"{', '.join(missing)} not set; load the cluster's tessera.env "
                       "(set -a; . DATA/tessera.env; set +a) or pass --config "
                       "DATA/tessera.toml")
    base = env[ENV_URL].rstrip("/")
    parts = urllib.parse.urlsplit(base)
    try:
        parts.port  # noqa: B018  (raises ValueError on a port out of range)
    except ValueError:
        parts = parts._replace(netloc="")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CliError(f"{ENV_URL}={base!r} is not an http(s) URL; use the `admin endpoint` "
                       "that `tessera up` printed (in DATA/tessera.env)")
    url = base + "/admin/v1" + path
    if query:
        url += "?" + urllib.parse.urlencode(query)
    data = json.dumps(body).encode() if body is not None else b""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if method not in ("GET", "HEAD"):  # a signed change is served once (gateway.admin.once):
        headers["X-Tessera-Nonce"] = secrets.token_hex(8)  # two equal ones in a second differ
    signed = sign_headers(method, url, headers, data, env[ENV_AK], env[ENV_SK])
    http_req = urllib.request.Request(url, data=data if data else None, method=method,
                                      headers=signed)
    try:
        with urllib.request.urlopen(http_req, timeout=TIMEOUT_S) as resp:  # noqa: S310
            return json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        kind = Unavailable if exc.code in (502, 503, 504) else CliError
        try:
            err = json.loads(exc.read())["error"]
            hint = _CREDENTIAL_HINTS.get(err["code"], "")
            raise kind(f"{err['message']} ({err['code']}){hint}") from None
        except (ValueError, KeyError, TypeError):
            raise kind(f"admin API answered HTTP {exc.code} without an admin error; is "
                           f"{ENV_URL}={env[ENV_URL]} the `admin endpoint` of `tessera up` "
                           "(not the S3 endpoint)?") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        if method not in ("GET", "HEAD") and not isinstance(reason, ConnectionRefusedError):
            # sent, its answer lost (a gateway killed mid-change): made or not; its claim
            # (gateway.admin.once) refuses the very same bytes, but a run signs anew
            raise Unavailable(f"the admin API at {env[ENV_URL]} did not answer ({reason}): "
                              "the change may or may not have been made; check (e.g. "
                              "`tessera tenant show`, `tessera key list`) before running the "
                              "command again (each run is signed anew)") from None
        raise Unavailable(f"cannot reach the admin API at {env[ENV_URL]} ({reason}); is the "
                       "cluster running (tessera up)?") from None


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def table(rows: list[dict[str, Any]], cols: list[tuple[str, str]]) -> str:
    """A plain aligned text table of `rows` with (key, title) columns."""
    cells = [[title.upper() for _, title in cols]]
    for r in rows:
        out = []
        for key, _ in cols:
            v = r.get(key)
            if key in ("created", "due", "shred_due", "reclaimed", "deletion_date"):
                v = _when(v)
            elif isinstance(v, list):
                v = ",".join(str(x) for x in v)
            out.append("-" if v is None else str(v))
        cells.append(out)
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in cells)


TENANT_COLS = [("name", "name"), ("state", "state"), ("kek_version", "kek"),
               ("buckets", "buckets"), ("rewrap_pending", "rewrapping"),
               ("shred_due", "shred due"), ("created", "created")]
KEY_COLS = [("access_key_id", "access key id"), ("tenant", "tenant"), ("state", "state"),
            ("created", "created")]


def _emit(a: argparse.Namespace, payload: dict[str, Any], text: str) -> None:
    print(json.dumps(payload, indent=2, sort_keys=True) if a.json else text)


def _tenant(a: argparse.Namespace) -> None:
    q = urllib.parse.quote
    if a.action == "create":
        r = admin_request("POST", "/tenants", {"name": a.name,
                                               **({"reuse_name": True} if a.reuse_name else {})})
        _emit(a, r, table([r], TENANT_COLS))
    elif a.action == "list":
        r = admin_request("GET", "/tenants")
        _emit(a, r, table(r["tenants"], TENANT_COLS))
    elif a.action == "show":
        r = admin_request("GET", f"/tenants/{q(a.name)}")
        text = "\n".join(f"{k:15} {_when(v) if k in ('created', 'shred_due', 'reclaimed') else v}"
                         for k, v in r.items())
        _emit(a, r, text)
    elif a.action == "update":
        body: dict[str, object] = {
            k: v for k, v in (("canonical_id", a.canonical_id),
                              ("display_name", a.display_name), ("email", a.email))
            if v is not None}
        if a.block_public_access is not None:
            names = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy",
                     "RestrictPublicBuckets")
            chosen = (names if a.block_public_access == "all" else () if
                      a.block_public_access == "none" else
                      tuple(x.strip() for x in a.block_public_access.split(",")))
            unknown = [x for x in chosen if x not in names]
            if unknown:  # a misspelt flag must not quietly turn every flag off
                raise CliError(f"unknown --block-public-access flag {unknown[0]!r}; use all, "
                               f"none or a comma-separated list of {', '.join(names)}")
            body["public_access_block"] = {n: n in chosen for n in names}
        r = admin_request("PATCH", f"/tenants/{q(a.name)}", body)
        blocked = [k for k, v in (r.get("public_access_block") or {}).items() if v]
        _emit(a, r, f"tenant {a.name}: canonical id {r['canonical_id']}, display name "
                    f"{r['display_name']!r}, email {r['email']!r}, public access block "
                    f"{','.join(blocked) or 'none'}")
    elif a.action == "delete":
        confirmed = _confirm_tenant_delete(a)
        r = admin_request("DELETE", f"/tenants/{q(a.name)}",
                          query=None if confirmed is None else {"kms_keys": confirmed})
        _emit(a, r, f"tenant {a.name} deleted")
    elif a.action == "rotate-key":
        r = admin_request("POST", f"/tenants/{q(a.name)}/rotate-key")
        _emit(a, r, f"tenant {a.name}: key version {r['kek_version']} is current; "
                    "object keys are rewrapped in the background")
    elif a.action == "shred":
        if a.cancel:
            r = admin_request("DELETE", f"/tenants/{q(a.name)}/shred")
            _emit(a, r, f"tenant {a.name}: shred cancelled (state {r['state']})")
            return
        if a.confirm != a.name:
            raise CliError(f"shredding destroys every object of {a.name} forever; repeat with "
                           f"--confirm {a.name}")
        body: dict[str, object] = {"confirm": a.confirm}
        if a.wait is not None:
            body["wait_s"] = a.wait
        if a.bypass_governance_retention:
            body["bypass_governance_retention"] = True
        r = admin_request("POST", f"/tenants/{q(a.name)}/shred", body)
        text = (f"tenant {a.name}: keys destroyed" if r["state"] == "shredded" else
                f"tenant {a.name}: keys will be destroyed at {_when(r['due'])} "
                f"(cancel with: tessera tenant shred {a.name} --cancel)")
        _emit(a, r, text)


def _confirm_tenant_delete(a: argparse.Namespace) -> str | None:
    """A tenant with KMS keys is deleted only when confirmed (`--yes`, or `y` on a
    terminal): deleting it destroys its keys, so whatever is still encrypted under them can
    never be read again (newuser18: it went without a word). The ids of the keys confirmed
    (comma-joined; "" for none), which the delete sends so that the gateway refuses it if
    the set changed meanwhile (review19c L6); None with --yes (no question asked)."""
    from ops.confirm import ask

    if a.yes:
        return None
    keys = admin_request("GET", f"/tenants/{urllib.parse.quote(a.name, safe='')}/kms-keys")["keys"]
    if not keys:
        return ""
    names = ", ".join(",".join(k.get("aliases") or []) or k["key_id"] for k in keys)
    what = (f"tenant {a.name} still has {len(keys)} KMS key(s) ({names}); deleting the "
            "tenant destroys them and revokes its access keys: anything still encrypted "
            "under them (SSE-KMS objects it wrote into other tenants' buckets or copied "
            "elsewhere, metadata backups) can never be "
            "decrypted again")
    if not sys.stdin.isatty():
        raise CliError(f"{what}; repeat with --yes to delete it")
    print(what, file=sys.stderr)
    if not ask(f"delete tenant {a.name} and its KMS keys?"):
        raise CliError("not deleted")
    return ",".join(sorted(k["key_id"] for k in keys))


def _key(a: argparse.Namespace) -> None:
    if a.action == "create":
        r = admin_request("POST", "/keys", {"tenant": a.tenant})
        text = (f"access key id:     {r['access_key_id']}\n"
                f"secret access key: {r['secret_access_key']}\n"
                f"tenant:            {r['tenant']}\n"
                "(the secret is shown only now)")
        _emit(a, r, text)
    elif a.action == "list":
        r = admin_request("GET", "/keys", query={"tenant": a.tenant} if a.tenant else None)
        rows = [{**k, "tenant": f"{k['tenant']} (deleted)"} if k.get("tenant_deleted") else k
                for k in r["keys"]]  # a deleted tenant's key, not a later namesake's
        _emit(a, r, table(rows, KEY_COLS))
    elif a.action == "revoke":
        r = admin_request("DELETE", f"/keys/{urllib.parse.quote(a.access_key)}")
        _emit(a, r, f"access key {a.access_key} revoked")


def one_line_errors(fn: Any) -> Any:
    """`fn(args)` as a subcommand: a CliError becomes one line on stderr and exit status 1."""
    def run(a: argparse.Namespace) -> int:
        try:
            use_config(getattr(a, "config", None))
            fn(a)
        except CliError as exc:
            print(f"tessera {a.command} {a.action}: {exc}", file=sys.stderr)
            return 1
        return 0

    return run


CONFIG_HELP = ("the cluster's tessera.toml: its admin endpoint, and the admin credential in "
               f"the tessera.env beside its data (default: ${ENV_URL}, ${ENV_AK} and "
               f"${ENV_SK})")


def config_option() -> argparse.ArgumentParser:
    """The `--config` option of the commands that speak to the admin API (a parent parser)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--config", help=CONFIG_HELP)
    return p


def add_admin_commands(sub: Any) -> None:
    """Add the `tenant` and `key` subcommands to the `tessera` parser."""
    js = argparse.ArgumentParser(add_help=False, parents=[config_option()])
    js.add_argument("--json", action="store_true", help="print JSON instead of a table")
    t = sub.add_parser("tenant", help="manage tenants (admin API)")
    ts = t.add_subparsers(dest="action", required=True)
    for name, hlp in (("create", "create a tenant"), ("show", "show one tenant"),
                      ("delete", "delete a tenant that owns no buckets (a shredded one once "
                       "reclaimed), its KMS keys and access keys"),
                      ("rotate-key", "new key version; rewrap object keys in background")):
        p = ts.add_parser(name, help=hlp, parents=[js])
        p.add_argument("name")
        if name == "create":
            p.add_argument("--reuse-name", action="store_true", help="take the name of a "
                           "deleted tenant (grants that named it in other tenants' bucket "
                           "policies and ACLs pass to this one: check them first)")
        if name == "delete":
            p.add_argument("--yes", action="store_true", help="delete a tenant that still has "
                           "KMS keys without asking (they are destroyed with it)")
    ts.add_parser("list", help="list tenants", parents=[js])
    up = ts.add_parser("update", help="set a tenant's S3 identity (ACL owner and grantee)",
                       parents=[js])
    up.add_argument("name")
    up.add_argument("--canonical-id", help="S3 canonical user id (default: the tenant name)")
    up.add_argument("--display-name", help="S3 owner DisplayName (default: the tenant name)")
    up.add_argument("--email", help="email address for AmazonCustomerByEmail grants")
    up.add_argument("--block-public-access", metavar="all|none|FLAG,...",
                    help="tenant-wide S3 public access block (BlockPublicAcls, "
                         "IgnorePublicAcls, BlockPublicPolicy, RestrictPublicBuckets)")
    sh = ts.add_parser("shred", help="destroy a tenant's keys (and so its data) forever",
                       parents=[js])
    sh.add_argument("name")
    sh.add_argument("--confirm", metavar="NAME", help="repeat the tenant name to confirm")
    sh.add_argument("--wait", type=float, default=None, metavar="SECONDS",
                    help="waiting period before the keys are destroyed (default: the "
                         "cluster's [gateway] shred_wait_s, 0 unless configured)")
    sh.add_argument("--cancel", action="store_true", help="cancel a scheduled shred, or end the "
                    "'shredding' state a shred that died left (writes 503)")
    sh.add_argument("--bypass-governance-retention", action="store_true",
                    help="shred even though object versions are under GOVERNANCE retention "
                         "(never past a legal hold or COMPLIANCE retention)")
    t.set_defaults(func=one_line_errors(_tenant))
    k = sub.add_parser("key", help="manage S3 access keys (admin API)")
    ks = k.add_subparsers(dest="action", required=True)
    kc = ks.add_parser("create", help="create an access key for a tenant", parents=[js])
    kc.add_argument("--tenant", required=True)
    kl = ks.add_parser("list", help="list access keys", parents=[js])
    kl.add_argument("--tenant")
    kr = ks.add_parser("revoke", help="revoke an access key", parents=[js])
    kr.add_argument("access_key")
    k.set_defaults(func=one_line_errors(_key))
