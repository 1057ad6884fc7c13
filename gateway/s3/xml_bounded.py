"""A cheap check that an S3 request body's XML is no bigger in shape than S3 documents are,
before it is parsed.

An 8 MiB DeleteObjects body (the size 1,000 escaped keys may need) parsed whole held a
gateway worker's event loop 3.6-6.4 s when it was 2,000,000 empty elements, 900,000 nested
ones or one start tag of 700,000 attributes (expat alone spends ~2 s on that), and built
hundreds of MB of elements, before the schema checks refused it. `check_shape` refuses, at
the speed of a byte scan, a body with more '<' than any S3 document has (`TAGS_MAX`: the
start and end tags of 10,000 completed parts, each with its children; a '<' in text must be
escaped) or a run of `MARKUP_RUN_MAX` bytes without a '>' (no S3 start tag is that long:
the longest text, an escaped 1,024-byte key, is a few KiB).
"""

from __future__ import annotations

TAGS_MAX = 200_000
MARKUP_RUN_MAX = 64 * 1024


class OverBudget(ValueError):
    """The body is bigger in shape than any S3 document."""


def check_shape(body: bytes) -> None:
    """OverBudget if `body` has more than TAGS_MAX '<' or MARKUP_RUN_MAX bytes without '>'."""
    tags = body.count(b"<")
    if tags > TAGS_MAX:
        raise OverBudget(f"{tags} tags, over {TAGS_MAX}")
    run = 0  # bytes since the last '>' before the current piece
    for at in range(0, len(body), MARKUP_RUN_MAX):  # a run inside one piece is short enough
        end = min(at + MARKUP_RUN_MAX, len(body))
        first = body.find(b">", at, end)
        if first < 0:
            run += end - at
        else:
            run += first - at
            if run > MARKUP_RUN_MAX:
                break
            run = end - body.rfind(b">", at, end) - 1
        if run > MARKUP_RUN_MAX:
            break
    else:
        return
    raise OverBudget(f"over {MARKUP_RUN_MAX} bytes without '>'")
