"""Client-side SigV4 header signing, built on the verifier's own canonicalisation.

The operator CLI signs its admin API requests with this, so `pip install -e .` alone (no
botocore) gives a working `tessera tenant|key|status`. The canonical request comes from the
same functions `gateway.s3.sigv4.authenticate` uses (`gateway.s3.sigv4_canonical`), so the
two can never disagree.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlsplit

from gateway.s3.sigv4_canonical import (
    ALGORITHM,
    canonical_query,
    canonical_request,
    normalize_headers,
    signing_key,
    string_to_sign,
)


def sign_headers(method: str, url: str, headers: Mapping[str, str], body: bytes,
                 access_key: str, secret_key: str, region: str = "us-east-1",
                 service: str = "s3", now: datetime | None = None) -> dict[str, str]:
    """`headers` plus Host, X-Amz-Date, X-Amz-Content-SHA256 and Authorization for `url`.

    Every header given is signed, as botocore does for the headers it sets.
    """
    now = (now or datetime.now(UTC)).astimezone(UTC)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    date = amz_date[:8]
    parts = urlsplit(url)
    out = {k: v for k, v in headers.items() if k.lower() not in ("authorization", "host")}
    out["Host"] = parts.netloc
    out["X-Amz-Date"] = amz_date
    payload = hashlib.sha256(body).hexdigest()
    out = {k: v for k, v in out.items() if k.lower() != "x-amz-content-sha256"}
    out["X-Amz-Content-SHA256"] = payload
    hdrs = normalize_headers(out)
    signed = tuple(sorted(hdrs))
    query = parse_qsl(parts.query, keep_blank_values=True)
    canonical = canonical_request(method, parts.path or "/", canonical_query(query), hdrs,
                                  signed, payload)
    scope = f"{date}/{region}/{service}/aws4_request"
    to_sign = string_to_sign(amz_date, scope, canonical)
    sig = hmac.new(signing_key(secret_key, date, region, service), to_sign.encode(),
                   hashlib.sha256).hexdigest()
    out["Authorization"] = (f"{ALGORITHM} Credential={access_key}/{scope}, "
                            f"SignedHeaders={';'.join(signed)}, Signature={sig}")
    return out
