"""The admin listener's Host allowlist, against DNS rebinding.

A web page the operator opens can point its own name at 127.0.0.1 (or any address the
operator's browser reaches) once loaded, and then read the admin listener same-origin:
`/metrics` (tenant names and traffic), `/health` (the node list), and failed console logins
from the operator's own address (which lock them out). Its requests carry the page's name in
`Host`, so the listener answers only a Host that is

- an IP literal (`127.0.0.1:9001`, `[::1]:9001`, `10.0.0.5`): no rebinding page has one,
  since a page's origin is a name;
- `localhost` or a `*.localhost` name (RFC 6761: browsers resolve these to loopback
  themselves, never through DNS);
- the host of `[gateway] admin_listen` when it is a name (the operator bound to it);
- a name in `[gateway] admin_hosts` (case-insensitive, exact: no wildcard but a lone `"*"`,
  which answers any Host, for a proxy in front that checks Host itself).

A value that is not `host[:port]` or `[v6][:port]` (a port of digits, no `%` zone) is
refused. It applies on every address the listener binds, not only loopback: rebinding
reaches a LAN address as easily as 127.0.0.1. Tools that use an address (the `tessera` CLI,
Prometheus targets, tests) are unaffected. A deployment that reaches the listener by name,
directly or through a TLS proxy, adds that name to `admin_hosts`, and a proxy must forward
the browser's original Host (nginx `proxy_set_header Host $host;`, Caddy does by default,
Apache `ProxyPreserveHost On`). A proxy that sends the upstream address as Host passes this
guard but breaks the console: the browser's `Origin` names the public name, which is not the
`Host` the listener sees (`request_host`), so every console change is refused 403
CrossOrigin. Do not rewrite `Origin` in the proxy instead; forward Host. A request without
Host (HTTP/1.0 tools; every browser sends one) is answered.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import hdrs, web

SETTING = "[gateway] admin_hosts"
ANY = "*"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def host_name(header: str) -> str:
    """The host of a Host header value, without port or brackets, lower case, no final dot;
    "" when the value is not `host[:port]` or `[v6]:port` (RFC 9110 7.2: the port is
    digits). Strict on purpose: `[::1]evil.example` was read as `::1` and answered, and
    aiohttp then failed on it with a 500; a `%` zone (`[fe80::1%25x]`) names no origin a
    browser can have."""
    h = header.strip()
    if h.startswith("["):  # [v6]:port
        end = h.find("]")
        rest = h[end + 1:]
        if end < 0 or "%" in h or (rest and not (rest[0] == ":" and rest[1:].isdigit())):
            return ""
        return h[1:end].lower()
    if "%" in h or "[" in h or "]" in h:
        return ""
    if h.count(":") > 1:  # an IPv6 literal without brackets
        return ""
    if ":" in h:
        h, port = h.split(":", 1)
        if port and not port.isdigit():
            return ""
    return h.lower().rstrip(".")


def request_host(request: web.Request) -> str:
    """The Host this listener's guard checked: the Host header, never aiohttp's
    `request.host`, which follows an absolute-form target (`GET http://evil.example/ ...`
    with `Host: 127.0.0.1` gives `evil.example`). The Origin check compares with this, so
    the listener has one idea of its host."""
    return request.headers.get(hdrs.HOST, "")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def allowed_names(admin_hosts: Iterable[str], admin_listen: str) -> frozenset[str]:
    """The configured names the listener answers to (beside IP literals and localhost)."""
    names = {host_name(n) for n in admin_hosts} - {""}
    listen_host = host_name(admin_listen)
    if listen_host and not _is_ip(listen_host):
        names.add(listen_host)
    return frozenset(names)


def host_allowed(header: str, names: frozenset[str]) -> bool:
    """Whether a request with this Host value is answered (see the module's rules)."""
    if ANY in names:
        return True
    name = host_name(header)
    return bool(name) and (_is_ip(name) or name == "localhost" or name.endswith(".localhost")
            or name in names)


def host_guard(names: frozenset[str]) -> Callable[[web.Request, Handler],
                                                     Awaitable[web.StreamResponse]]:
    """Middleware refusing, 421 HostNotAllowed, a request whose Host is not allowed."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        given = request.headers.getall(hdrs.HOST, [])
        for value in given:
            if not host_allowed(value, names):
                shown = (host_name(value) or value.strip())[:253]
                return web.json_response({"error": {
                    "code": "HostNotAllowed",
                    "message": f"this admin listener does not answer to the host name "
                               f"{shown!r} (a defence against DNS rebinding); to reach it "
                               f"by that name, add it to {SETTING}"}}, status=421)
        return await handler(request)

    return guard
