"""HTTP details of S3 responses: dates, byte ranges, conditional requests."""

from __future__ import annotations

import email.utils
import re
from collections.abc import Mapping
from datetime import UTC, datetime

from gateway.s3.errors import S3Error

# The last instant an HTTP date can name (31 Dec 9999 23:59:59 GMT): later instants (a
# lifecycle rule of Days=2147483647, say) are reported as this one, never a 500.
MAX_HTTP_TS = 253402300799.0


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(ts: float) -> str:
    """`email.utils.formatdate(ts, usegmt=True)`'s string (RFC 7231 IMF-fixdate), built
    from the datetime directly: it is on every GET and HEAD (Last-Modified)."""
    d = datetime.fromtimestamp(min(ts, MAX_HTTP_TS), UTC)  # rounds as formatdate does
    return (f"{_DAYS[d.weekday()]}, {d.day:02d} {_MONTHS[d.month - 1]} {d.year:04d} "
            f"{d.hour:02d}:{d.minute:02d}:{d.second:02d} GMT")


def parse_http_date(value: str) -> float | None:
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


def iso_time(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def parse_iso_instant(text: str) -> float | None:
    """An ISO 8601 date-time (x-amz-object-lock-retain-until-date, a Retention document's
    RetainUntilDate) as epoch seconds, UTC when it names no zone; None when it is not one.
    The one reading of such a value: the lock a write applies and the
    s3:object-lock-retain-until-date a policy judges (`iso_instant`) both come from it."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def iso_instant(ts: float) -> str:
    """`ts` as an ISO 8601 UTC date-time ("2030-01-01T00:00:00Z", a fraction only when it
    has one): the form a policy's Date condition reads unambiguously (all digits would be
    epoch seconds there)."""
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


_RANGE_SPEC = re.compile(r"([0-9]*)-([0-9]*)\Z")
_DIGITS = re.compile(r"[0-9]+\Z")


def ascii_digits(raw: str) -> bool:
    """Whether `raw` is one or more ASCII digits (str.isdigit also takes other Unicode
    digits, and int() '_', '+' and spaces, which S3 refuses)."""
    return _DIGITS.match(raw) is not None


DIGITS_MAX = 40  # significant digits read exactly; past them a value saturates (below)


def digits_int(raw: str) -> int:
    """The value of ASCII digits (`ascii_digits`, checked by the caller), leading zeros
    dropped. Past DIGITS_MAX significant digits it is 10**DIGITS_MAX: larger than every
    bound a request's number is held to (sizes, offsets, counts, 64-bit limits), so it is
    refused or clamped as the real value would be. int() itself refuses strings over 4,300
    digits (CPython's guard against quadratic conversion) with a ValueError that callers
    did not expect (a 500 for `Range: bytes=0-` and 5,000 nines)."""
    significant = raw.lstrip("0")
    return int(significant or "0") if len(significant) <= DIGITS_MAX else 10 ** DIGITS_MAX


def strict_int(raw: str) -> int:
    """A query or header integer: an optional '-' and ASCII digits (`ascii_digits`), else
    ValueError; its value as `digits_int` reads it."""
    digits = raw.removeprefix("-")
    if not ascii_digits(digits):
        raise ValueError(f"not an integer: {raw!r}")
    return -digits_int(digits) if raw.startswith("-") else digits_int(digits)


INT32_MAX = 2**31 - 1


_NEGATIVE_NAME = {"max-keys": "maxKeys"}  # S3's name for it in the negative one's message


def count_param(params: Mapping[str, str], name: str, default: int, cap: int) -> int:
    """A listing's count or marker query parameter (max-keys, max-uploads, max-parts,
    part-number-marker): absent is `default`, a larger one is `cap`. S3 reads it as an int32:
    one that is not one (not an integer, or past 2147483647) and a negative one are each
    400 InvalidArgument, with S3's two messages (the second names max-keys `maxKeys`)."""
    raw = params.get(name)
    if raw is None:
        return default
    try:
        n = strict_int(raw)
    except ValueError:
        n = None
    if n is None or n > INT32_MAX or n < -INT32_MAX - 1:
        raise S3Error("InvalidArgument", f"Provided {name} not an integer or within integer "
                      "range", ArgumentName=name, ArgumentValue=raw)
    if n < 0:
        arg = _NEGATIVE_NAME.get(name, name)
        raise S3Error("InvalidArgument", f"Argument {arg} must be an integer between 0 and "
                      f"{INT32_MAX}", ArgumentName=arg, ArgumentValue=raw)
    return min(n, cap)


def _digits_below(a: str, b: str) -> bool:
    """Whether ASCII digits `a` are a smaller number than `b`, however many digits."""
    a, b = a.lstrip("0"), b.lstrip("0")
    return (len(a), a) < (len(b), b)


def _unsatisfiable(header: str, size: int) -> S3Error:
    """416 InvalidRange, with the `Content-Range: bytes */size` RFC 7233 section 4.4 has a
    416 send (so a client learns the size); every 416 of a Range carries it."""
    return S3Error("InvalidRange", RangeRequested=header, ActualObjectSize=str(size),
                   headers={"Content-Range": f"bytes */{size}"})


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """[start, end) of a single `bytes=` range; None means the whole object.

    Syntactically invalid or multi-range headers are ignored, as S3 does (on an empty
    object too); a range that starts at or past the end (on an empty object every
    `first-` form: S3 answers 416 there, minio#6557, minio-java#636) and a zero-length
    suffix are InvalidRange. A suffix of n > 0 bytes is satisfiable whatever the size
    (RFC 9110 section 14.1.1: on an empty representation it is the only satisfiable form),
    and on an empty object it is the whole, empty object: 200, as LocalStack's range parser
    answers and Trino's tail read of an empty S3 object expects (floci-io/floci#1141). GET
    and HEAD both read the header here, so they answer alike.
    """
    if not header or not header.startswith("bytes="):
        return None
    if "," in header:
        return None
    found = _RANGE_SPEC.match(header[6:].strip())  # ASCII digits only: int() takes more
    if found is None:
        return None
    first, last = found.groups()
    if first == "":
        if last == "":
            return None
        n = digits_int(last)
        if n <= 0:
            raise _unsatisfiable(header, size)
        return None if size == 0 else (max(0, size - n), size)
    if last and _digits_below(last, first):  # exact: digits_int saturates past 40 digits
        return None
    start = digits_int(first)
    end = digits_int(last) + 1 if last else size
    if start >= size:
        raise _unsatisfiable(header, size)
    return start, min(end, size)


def _etag_matches(header: str, etag: str, weak: bool = False) -> bool:
    """Whether the list of entity tags in `header` ("*" or tags) names `etag`. Strong
    comparison (If-Match): a weak tag `W/"..."` never matches; weak comparison
    (If-None-Match on GET/HEAD): it matches its opaque value. RFC 7232 sections 2.3.2,
    3.1 and 3.2, which AWS's GetObject and HeadObject references name for these headers;
    S3's own ETags are strong."""
    for t in (t.strip() for t in header.split(",")):
        if weak and t.startswith("W/"):
            t = t[2:]
        if t == "*" or (not t.startswith("W/") and t.strip('"') == etag):
            return True
    return False


def check_conditions(headers: object, etag: str, last_modified: float, read: bool) -> None:
    """Apply If-Match / If-None-Match / If-(Un)Modified-Since the way S3 orders them."""
    get = headers.get  # type: ignore[attr-defined]
    lm = int(last_modified)
    im, inm = get("If-Match"), get("If-None-Match")
    ims, ius = get("If-Modified-Since"), get("If-Unmodified-Since")
    if im is not None and not _etag_matches(im, etag):
        raise S3Error("PreconditionFailed", Condition="If-Match")
    if im is None and ius is not None:
        t = parse_http_date(ius)
        if t is not None and lm > t:
            raise S3Error("PreconditionFailed", Condition="If-Unmodified-Since")
    if inm is not None and _etag_matches(inm, etag, weak=read):
        if read:
            raise S3Error("NotModified", headers={"ETag": f'"{etag}"'})
        raise S3Error("PreconditionFailed", Condition="If-None-Match")
    if inm is None and ims is not None and read:
        t = parse_http_date(ims)
        if t is not None and lm <= t:
            raise S3Error("NotModified", headers={"ETag": f'"{etag}"'})
