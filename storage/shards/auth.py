"""Node request authentication (scheme v2): an HMAC over the request and its body.

Who can see node traffic, and what this protects, is in docs/ARCHITECTURE.md ("Node
requests"). In short, with the cluster secret (32 random bytes shared by gateways and nodes):

- Every request carries `X-Tessera-Date` (epoch seconds, millisecond precision), a random
  `X-Tessera-Nonce` and `X-Tessera-Auth`: an HMAC-SHA256 over the scheme, the target node id,
  the method, the raw path and query, and every other `X-Tessera-*` header (name and value,
  sorted, all values of a repeated header). Headers that change what a request does
  (`X-Tessera-Segments`, `X-Tessera-Replace`, the body digest) are therefore signed.
- The body is covered too. A body known in advance (a batch) is signed through
  `X-Tessera-Body-SHA256`. A streamed shard PUT, whose bytes are produced while they are sent,
  says `X-Tessera-Body: trailer` and ends with a 16-byte trailer: the GMAC (AES-256-GCM with
  only associated data) of every body byte before it, under a key derived from the secret,
  with the first 96 bits of the request's auth MAC as nonce (so it is bound to the request and
  never repeats). GMAC rather than HMAC-SHA256: ~4x less CPU per byte on AES-NI hardware. The
  node computes it in the same pass that writes the bytes (in the writer thread) and commits
  nothing whose trailer differs.
- A node refuses requests dated outside +-window of its clock, nonces it has seen in this
  process's life, every request dated before the process started, and every request dated at
  or before its persisted watermark B (`Watermark`): B is at least every date the node ever
  accepted, written (fsync) before a request dated past it is accepted, as that date plus
  WATERMARK_AHEAD_S, so about one small write per WATERMARK_AHEAD_S of traffic, not one per
  request (an in-place overwrite of one of two slots and an fdatasync:
  `storage/shards/watermark.py`). The node writes it on a worker thread (`Watermark.cover_async`: one write at a
  time, shared by every request waiting for it), and starts the next write once a request
  comes within half of WATERMARK_AHEAD_S of B, so requests seldom wait for it and the event
  loop never blocks on its fsyncs. A restarted node starts with the B it persisted, so a request captured before a
  crash cannot be replayed after it, even one dated ahead of the node's clock by a gateway
  whose clock runs fast (which the start-time rule alone let through). The price: a gateway
  whose clock runs behind the latest date accepted (or behind the node's) is refused by a
  freshly restarted node for that lag (it retries); the node delays its start by up to
  WATERMARK_AHEAD_S so that a gateway with a correct clock is not.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from storage.crypto.aead import OneShotMac, StreamMac
from storage.shards.watermark import WATERMARK_AHEAD_S, Watermark

DATE_HEADER = "X-Tessera-Date"
NONCE_HEADER = "X-Tessera-Nonce"
AUTH_HEADER = "X-Tessera-Auth"
BODY_HEADER = "X-Tessera-Body-SHA256"
BODY_MODE_HEADER = "X-Tessera-Body"
BODY_TRAILER = "trailer"
TRAILER_BYTES = 16
SCHEME = b"tessera-node-v2"
BODY_SCHEME = b"tessera-node-body-gmac-v2"
_SIGNED_PREFIX = "x-tessera-"
_AUTH_LOWER = AUTH_HEADER.lower()


def load_or_create_secret(path: Path) -> bytes:
    """The cluster secret: 32 random bytes in a 0600 file, made on first start."""
    if path.exists():
        return bytes.fromhex(path.read_text().strip())
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, secrets.token_bytes(32).hex().encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # first writer wins; a racing process reads the winner's secret
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    return bytes.fromhex(path.read_text().strip())


def _signed_headers(items: Iterable[tuple[str, str]]) -> list[bytes]:
    """The canonical `name:value` lines of every X-Tessera-* header but the MAC itself."""
    out = []
    for name, value in items:
        low = name.lower()
        if low.startswith(_SIGNED_PREFIX) and low != _AUTH_LOWER:
            out.append(f"{low}:{value.strip()}".encode())
    return sorted(out)


def _mac(secret: bytes, node_id: str, method: str, path_qs: str,
         items: Iterable[tuple[str, str]]) -> str:
    parts = [SCHEME, node_id.encode(), method.upper().encode(), path_qs.encode(),
             *_signed_headers(items)]
    # hmac.digest: OpenSSL's one-shot HMAC, the value of hmac.new(...) without its objects
    return hmac.digest(secret, b"\n".join(parts), "sha256").hex()


def body_digest(body: bytes) -> str:
    """The SHA-256 of a request body as `sign(body_sha256=...)` and the node expect it."""
    return hashlib.sha256(body).hexdigest()


def sign(secret: bytes, method: str, path_qs: str, node_id: str = "",
         now: float | None = None, body_sha256: str | None = None,
         headers: Mapping[str, str] | None = None, trailer: bool = False) -> dict[str, str]:
    """Headers that authenticate one request to one node.

    `headers` are extra X-Tessera-* headers to send (signed with the rest); `body_sha256`
    signs a body known in advance; `trailer` announces a streamed body that ends with
    `body_mac(...)` (see `BodySealer`).
    """
    t = time.time() if now is None else now
    out = dict(headers or {})
    out[DATE_HEADER] = f"{t:.3f}"
    out[NONCE_HEADER] = secrets.token_hex(16)
    if body_sha256 is not None:
        out[BODY_HEADER] = body_sha256
    if trailer:
        out[BODY_MODE_HEADER] = BODY_TRAILER
    out[AUTH_HEADER] = _mac(secret, node_id, method, path_qs, out.items())
    return out


def body_key(secret: bytes) -> bytes:
    """The AES key of body MACs, derived from the cluster secret (label BODY_SCHEME)."""
    return hmac.new(secret, BODY_SCHEME, hashlib.sha256).digest()


def _body_nonce(auth_mac: str) -> bytes:
    try:
        nonce = bytes.fromhex(auth_mac)[:12]
    except ValueError:
        nonce = b""
    if len(nonce) != 12:
        raise ValueError("malformed auth MAC")
    return nonce


def body_mac(key: bytes, auth_mac: str) -> StreamMac:
    """A fresh MAC of one streamed body: GMAC under `body_key`, its nonce the first 96 bits
    of the request's auth MAC (unique per request: the MAC covers a random 128-bit nonce)."""
    return StreamMac(key, _body_nonce(auth_mac))


class WholeBodySealer:
    """`BodySealer`'s trailer for a body already whole, under one key object made once: the
    same GMAC (AES-GCM of no plaintext, the body as associated data) in one call, without a
    cipher context set up per request."""

    def __init__(self, secret: bytes) -> None:
        self._mac = OneShotMac(body_key(secret))

    def trailer(self, headers: Mapping[str, str], body: bytes) -> bytes:
        return self._mac.tag(_body_nonce(headers[AUTH_HEADER]), body)


class WholeBodyMac:
    """`StreamMac`'s interface over `OneShotMac`: the pieces fed are kept (views, no copy)
    and tagged in one call by `digest` (one piece, as a whole body is fed, is not joined)."""

    __slots__ = ("_mac", "_nonce", "_parts", "_tag")

    def __init__(self, mac: OneShotMac, nonce: bytes) -> None:
        self._mac, self._nonce = mac, nonce
        self._parts: list[bytes | bytearray | memoryview] = []
        self._tag: bytes | None = None

    def update(self, data: bytes | bytearray | memoryview) -> None:
        if self._tag is not None:
            raise ValueError("MAC already finalized")
        self._parts.append(data)

    def digest(self) -> bytes:
        if self._tag is None:
            parts, self._parts = self._parts, []
            whole = parts[0] if len(parts) == 1 else b"".join(parts)  # b"" when none
            self._tag = self._mac.tag(self._nonce, whole)  # type: ignore[arg-type]
        return self._tag


class BodySealer:
    """Client side of a streamed body: feed every chunk, send `trailer()` last."""

    def __init__(self, secret: bytes, headers: Mapping[str, str]) -> None:
        self._mac = body_mac(body_key(secret), headers[AUTH_HEADER])

    def update(self, chunk: bytes | bytearray | memoryview) -> None:
        self._mac.update(chunk)

    def trailer(self) -> bytes:
        return self._mac.digest()


def seal(secret: bytes, headers: Mapping[str, str], body: bytes) -> bytes:
    """`body` followed by its trailer (a whole body sent as a streamed one; for tests, tools)."""
    s = BodySealer(secret, headers)
    s.update(body)
    return body + s.trailer()


class Verifier:
    """Checks request signatures; refuses replays (seen nonces, requests from before start
    or at or before the persisted watermark of an earlier life)."""

    def __init__(self, secret: bytes, window_s: int = 60, node_id: str = "",
                 started_at: float | None = None, watermark: Watermark | None = None) -> None:
        self._watermark = watermark
        self._floor = watermark.previous if watermark is not None else 0.0
        self._secret = secret
        self._body_key = body_key(secret)
        self._whole: OneShotMac | None = None  # `whole_body_mac`'s key object
        self._node_id = node_id
        self._window_s = window_s
        self.started_at = time.time() if started_at is None else started_at
        self._seen: dict[str, float] = {}
        self._next_sweep = 0.0

    def check(self, method: str, path_qs: str, headers: Any,
              now: float | None = None) -> str | None:
        """Return None when the request is authentic, else a short reason (never the secret).

        `headers` is a (multi)mapping with `.get` and `.items()` (all values of repeated
        headers are signed, so a header added on the way makes the MAC fail).
        """
        t = time.time() if now is None else now
        found = self._verify(method, path_qs, headers, t)
        if isinstance(found, str):
            return found
        if self._watermark is not None:
            try:
                self._watermark.cover(found[0])
            except OSError:
                return "cannot persist the replay watermark"
        self._remember(found[1], t)
        return None

    async def check_async(self, method: str, path_qs: str, headers: Any) -> str | None:
        """`check`, with the watermark written off the event loop (`cover_async`). The
        nonce is recorded before the wait, so a replay arriving meanwhile is refused."""
        t = time.time()
        found = self._verify(method, path_qs, headers, t)
        if isinstance(found, str):
            return found
        self._remember(found[1], t)
        if self._watermark is not None:
            try:
                await self._watermark.cover_async(found[0])
            except OSError:
                return "cannot persist the replay watermark"
        return None

    def plausible(self, method: str, path_qs: str, headers: Any) -> bool:
        """Whether a request passes every check but the watermark, without recording its
        nonce (`check_async` must still run before acting on it): lets a front end refuse
        to buffer the body of a request that will be refused."""
        return self.vouch(method, path_qs, headers) is not None

    def vouch(self, method: str, path_qs: str, headers: Any) -> tuple[float, str] | None:
        """`plausible`, keeping what it found: the request's (date, nonce) for
        `check_vouched_async`, or None when a check fails (nothing recorded either way)."""
        found = self._verify(method, path_qs, headers, time.time())
        return None if isinstance(found, str) else found

    async def check_vouched_async(self, found: tuple[float, str]) -> str | None:
        """`check_async` of a request `vouch` passed (same method, path and headers): its
        signature is not computed again; the checks that time or other requests can change
        since (window, replay, watermark) run now, as `check_async` runs them."""
        t = time.time()
        when, nonce = found
        reason = self._fresh(when, nonce, t)
        if reason is not None:
            return reason
        self._remember(nonce, t)
        if self._watermark is not None:
            try:
                await self._watermark.cover_async(when)
            except OSError:
                return "cannot persist the replay watermark"
        return None

    def _verify(self, method: str, path_qs: str, headers: Any, t: float,
                ) -> str | tuple[float, str]:
        """Every check but the watermark: a reason, or the request's (date, nonce)."""
        get = headers.get
        date, nonce, mac = get(DATE_HEADER), get(NONCE_HEADER), get(AUTH_HEADER)
        if not (date and nonce and mac):
            return "missing cluster credential"
        try:
            when = float(date)
        except ValueError:
            return "bad date"
        if not abs(t - when) <= self._window_s:  # also refuses nan
            return "request outside the replay window"
        body = get(BODY_HEADER)
        if body is not None and len(body) != 64:
            return "bad body digest"
        if len(nonce) > 64 or not hmac.compare_digest(
            _mac(self._secret, self._node_id, method, path_qs, headers.items()), mac
        ):
            return "bad signature"
        return self._fresh(when, nonce, t) or (when, nonce)

    def _fresh(self, when: float, nonce: str, t: float) -> str | None:
        """The checks of a signed request's date and nonce: a reason, or None."""
        if not abs(t - when) <= self._window_s:  # also refuses nan
            return "request outside the replay window"
        if when < self.started_at or when <= self._floor:
            return "request predates the node's start"
        if nonce in self._seen:
            return "replayed request"
        return None

    def _remember(self, nonce: str, t: float) -> None:
        self._seen[nonce] = t
        if t >= self._next_sweep:
            cutoff = t - 2 * self._window_s
            self._seen = {n: s for n, s in self._seen.items() if s >= cutoff}
            self._next_sweep = t + self._window_s

    def start_delay(self, now: float | None = None) -> float:
        """Seconds to wait before serving so that requests dated by a correct clock are past
        the last life's watermark (at most WATERMARK_AHEAD_S; a gateway running ahead pushed
        the watermark further and its own later dates are past it anyway)."""
        t = time.time() if now is None else now
        return max(0.0, min(self._floor - t, WATERMARK_AHEAD_S) + 0.01) if self._floor > t \
            else 0.0

    def body_mac(self, headers: Mapping[str, str]) -> StreamMac:
        """The MAC a streamed body's trailer must equal (after `check` passed)."""
        return body_mac(self._body_key, headers[AUTH_HEADER])

    def whole_body_mac(self, headers: Mapping[str, str]) -> WholeBodyMac:
        """`body_mac` for a body received whole: the same tag, in one call under a key
        object made once (no cipher context set up per request)."""
        if self._whole is None:
            self._whole = OneShotMac(self._body_key)
        return WholeBodyMac(self._whole, _body_nonce(headers[AUTH_HEADER]))
