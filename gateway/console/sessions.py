"""Console sessions: random cookie tokens mapped to the admin access key, with a CSRF token.

Sessions live in the gateway's memory only (a restart logs everyone out). A session ends after
`idle_s` without a request, after `max_s` in all, at logout, or when its admin key stops being
an active admin key (checked on every request by `gateway.admin.auth`). Tokens are 256-bit
random values; the store is keyed by their SHA-256, and the CSRF token is compared in constant
time, so neither a lookup nor a comparison leaks a token through timing.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

from gateway.admin.hosts import request_host

COOKIE = "tessera_console"
CSRF_HEADER = "X-CSRF-Token"
MAX_SESSIONS = 1000  # the oldest session goes first when more are opened
LOGIN_FAILURES = 10  # failed logins per remote address in LOGIN_WINDOW_S before 429
LOGIN_WINDOW_S = 300.0


@dataclass
class Session:
    who: str  # the admin access key id the session acts as
    csrf: str
    created: float
    seen: float

    def expires(self, idle_s: float, max_s: float) -> float:
        return min(self.seen + idle_s, self.created + max_s)


class SessionStore:
    """Open, find (touching), and close sessions; count failed logins per remote address."""

    def __init__(self, idle_s: float, max_s: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.idle_s = idle_s
        self.max_s = max_s
        self._clock = clock
        self._by_digest: dict[bytes, Session] = {}
        self._failures: dict[str, list[float]] = {}
        self._checking: dict[str, int] = {}  # login attempts admitted and not yet ended

    @staticmethod
    def _digest(token: str) -> bytes:
        return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()

    def open(self, who: str) -> tuple[str, Session]:
        """A new session for `who`: (cookie token, session)."""
        self._sweep()
        while len(self._by_digest) >= MAX_SESSIONS:
            oldest = min(self._by_digest, key=lambda d: self._by_digest[d].created)
            del self._by_digest[oldest]
        now = self._clock()
        token = secrets.token_urlsafe(32)
        s = Session(who=who, csrf=secrets.token_urlsafe(32), created=now, seen=now)
        self._by_digest[self._digest(token)] = s
        return token, s

    def find(self, token: str | None, touch: bool = True) -> Session | None:
        """The live session of a cookie token (its idle clock restarted), or None."""
        if not token:
            return None
        d = self._digest(token)
        s = self._by_digest.get(d)
        if s is None:
            return None
        now = self._clock()
        if now >= s.expires(self.idle_s, self.max_s):
            del self._by_digest[d]
            return None
        if touch:
            s.seen = now
        return s

    def touch(self, session: Session) -> None:
        session.seen = self._clock()

    def close(self, token: str | None) -> None:
        if token:
            self._by_digest.pop(self._digest(token), None)

    def close_all(self, who: str) -> None:
        """End every session of an access key (it was revoked or lost its admin role)."""
        for d in [d for d, s in self._by_digest.items() if s.who == who]:
            del self._by_digest[d]

    def __len__(self) -> int:
        return len(self._by_digest)

    def _sweep(self) -> None:
        now = self._clock()
        for d in [d for d, s in self._by_digest.items()
                  if now >= s.expires(self.idle_s, self.max_s)]:
            del self._by_digest[d]

    # failed logins ---------------------------------------------------------------------------

    def login_begin(self, remote: str) -> bool:
        """Admit one login attempt from `remote` unless its failures in the window plus its
        attempts still being checked reach LOGIN_FAILURES; an admitted attempt must end with
        `login_end`. Checked and counted in one step, before the handler awaits anything:
        a check alone let a burst of concurrent guesses all pass before any failed."""
        now = self._clock()
        recent = [t for t in self._failures.get(remote, []) if now - t < LOGIN_WINDOW_S]
        if recent:
            self._failures[remote] = recent
        else:
            self._failures.pop(remote, None)
        if len(recent) + self._checking.get(remote, 0) >= LOGIN_FAILURES:
            return False
        self._checking[remote] = self._checking.get(remote, 0) + 1
        return True

    def login_retry_s(self, remote: str) -> int:
        """Whole seconds until `login_begin` may admit `remote` again, for a 429's Retry-After
        (RFC 9110 10.2.3): when enough of its failures have left the window; 1 when only
        attempts still being checked hold the places (they end in moments)."""
        now = self._clock()
        recent = [t for t in self._failures.get(remote, []) if now - t < LOGIN_WINDOW_S]
        i = len(recent) + self._checking.get(remote, 0) - LOGIN_FAILURES
        if not 0 <= i < len(recent):
            return 1
        return max(1, math.ceil(recent[i] + LOGIN_WINDOW_S - now))

    def login_end(self, remote: str) -> None:
        """An admitted attempt is over (its failure, if it failed, already recorded)."""
        left = self._checking.get(remote, 0) - 1
        if left > 0:
            self._checking[remote] = left
        else:
            self._checking.pop(remote, None)

    def login_failed(self, remote: str) -> None:
        if len(self._failures) > 10_000:  # bound memory under a spray from many addresses
            self._failures.clear()
        self._failures.setdefault(remote, []).append(self._clock())


def from_another_origin(request: web.Request) -> bool:
    """Whether a browser says this request was made by a page of another origin: Fetch
    Metadata's `Sec-Fetch-Site` is anything but same-origin or none (the user's own
    navigation), or its `Origin` is not this listener. Same-site is not enough: a page on
    another port of this host (an HTML object the S3 port serves) is same-site, so
    SameSite=Strict sends it the session cookie, and its reads ran as the admin. `Origin`
    is checked on every method, reads too, for browsers that send no Fetch Metadata
    (Safari before 16.4, older Firefox): they send Origin on every cross-origin fetch,
    and a same-origin one carries none or this listener's. `Origin: null` is same-origin
    only when `Sec-Fetch-Site: same-origin` says so (a header no page can set): a browser
    following Fetch sends null on its own origin's changes under a strict Referrer-Policy
    (Firefox's fetch, Chrome's form posts), while an opaque origin (a sandboxed frame, a
    data: page) sends null with cross-site. The host compared is the Host header the
    admin Host guard checked (`hosts.request_host`), not aiohttp's `request.host`."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return True
    origin = request.headers.get("Origin")
    if origin is None or (origin == "null" and site == "same-origin"):
        return False
    return urlsplit(origin).netloc.lower() != request_host(request).lower()


def came_over_tls(request: web.Request) -> bool:
    """Whether the browser reached us over TLS: directly, or through a proxy that says so
    (`X-Forwarded-Proto: https`, or `Forwarded: proto=https`, the first hop's). It only ever
    adds the cookie's Secure flag, so a client claiming it falsely harms only its own
    cookie; without it, a session behind a TLS proxy was sent over plain HTTP too."""
    if request.secure:
        return True
    xfp = request.headers.get("X-Forwarded-Proto", "").split(",", 1)[0].strip().lower()
    fwd = request.headers.get("Forwarded", "").split(",", 1)[0]
    protos = [p.split("=", 1)[1].strip().strip('"').lower() for p in fwd.split(";")
              if p.strip().lower().startswith("proto=")]
    return xfp == "https" or protos == ["https"]


def csrf_ok(session: Session, given: str | None) -> bool:
    """Constant-time check of the CSRF header against the session's token."""
    return given is not None and hmac.compare_digest(session.csrf.encode(),
                                                     given.encode("utf-8", "surrogateescape"))


SESSIONS: web.AppKey[SessionStore] = web.AppKey("console_sessions", SessionStore)
