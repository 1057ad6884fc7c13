"""Node-to-node request authentication: an HMAC over the request line with the cluster secret.

Each request carries a timestamp and a random nonce; a node refuses requests outside a short
window and nonces it has already seen inside it, so a captured request cannot be replayed.
Shard bodies are protected by their per-frame checksums and the end-to-end AES-GCM tag.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

DATE_HEADER = "X-Tessera-Date"
NONCE_HEADER = "X-Tessera-Nonce"
AUTH_HEADER = "X-Tessera-Auth"
BODY_HEADER = "X-Tessera-Body-SHA256"
SCHEME = b"tessera-node-v1"


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


def _mac(secret: bytes, node_id: str, method: str, path_qs: str, date: str, nonce: str,
         body_sha256: str | None = None) -> str:
    parts = [SCHEME, node_id.encode(), method.upper().encode(), path_qs.encode(),
             date.encode(), nonce.encode()]
    if body_sha256 is not None:  # requests whose body says what to do sign the body too
        parts.append(body_sha256.encode())
    return hmac.new(secret, b"\n".join(parts), hashlib.sha256).hexdigest()


def body_digest(body: bytes) -> str:
    """The SHA-256 of a request body as `sign(body_sha256=...)` and the node expect it."""
    return hashlib.sha256(body).hexdigest()


def sign(secret: bytes, method: str, path_qs: str, node_id: str = "",
         now: float | None = None, body_sha256: str | None = None) -> dict[str, str]:
    """Headers that authenticate one request to one node (the node id is signed too, and
    the body's SHA-256 when given: a batch request's body names the shards it touches)."""
    date = str(int(now if now is not None else time.time()))
    nonce = secrets.token_hex(16)
    headers = {DATE_HEADER: date, NONCE_HEADER: nonce,
               AUTH_HEADER: _mac(secret, node_id, method, path_qs, date, nonce, body_sha256)}
    if body_sha256 is not None:
        headers[BODY_HEADER] = body_sha256
    return headers


class Verifier:
    """Checks request signatures and remembers recent nonces to refuse replays."""

    def __init__(self, secret: bytes, window_s: int = 60, node_id: str = "") -> None:
        self._secret = secret
        self._node_id = node_id
        self._window_s = window_s
        self._seen: dict[str, float] = {}
        self._next_sweep = 0.0

    def check(self, method: str, path_qs: str, headers: dict[str, str] | object,
              now: float | None = None) -> str | None:
        """Return None when the request is authentic, else a short reason (never the secret)."""
        get = headers.get  # type: ignore[attr-defined]
        date, nonce, mac = get(DATE_HEADER), get(NONCE_HEADER), get(AUTH_HEADER)
        if not (date and nonce and mac):
            return "missing cluster credential"
        t = time.time() if now is None else now
        try:
            skew = abs(t - int(date))
        except ValueError:
            return "bad date"
        if skew > self._window_s:
            return "request outside the replay window"
        body = get(BODY_HEADER)
        if body is not None and len(body) != 64:
            return "bad body digest"
        if len(nonce) > 64 or not hmac.compare_digest(
            _mac(self._secret, self._node_id, method, path_qs, date, nonce, body), mac
        ):
            return "bad signature"
        if nonce in self._seen:
            return "replayed request"
        self._seen[nonce] = t
        if t >= self._next_sweep:
            cutoff = t - 2 * self._window_s
            self._seen = {n: s for n, s in self._seen.items() if s >= cutoff}
            self._next_sweep = t + self._window_s
        return None
