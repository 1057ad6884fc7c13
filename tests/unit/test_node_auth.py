"""Node request authentication v2: golden vectors of the wire format, and the Verifier's rules."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from multidict import CIMultiDict

from storage.shards import auth
from storage.shards.watermark import read_watermark

SECRET = bytes(range(32))
SID_PATH = "/v1/shards/" + "ab" * 16 + ".2"
HEADERS = {"X-Tessera-Date": "1733350000.123", "X-Tessera-Nonce": "00112233445566778899aabbccddeeff",
           "X-Tessera-Segments": "3", "X-Tessera-Body": "trailer"}
GOLDEN_AUTH = "d176fe92e8cadb50e7275445e80554b23909b45dcf50b06d5cd27cd3c0024cec"
GOLDEN_BODY_MAC = "e7f22f31c876a6fc69e34b6f901b9b9c"


def test_golden_request_mac_and_body_mac() -> None:
    """Pinned: changing either format breaks mixed-version clusters, so it needs a new scheme."""
    assert auth._mac(SECRET, "n1", "PUT", SID_PATH, HEADERS.items()) == GOLDEN_AUTH
    assert auth._mac(SECRET, "n1", "put", SID_PATH,
                     [(k.lower(), v) for k, v in reversed(HEADERS.items())]) == GOLDEN_AUTH
    sealer = auth.BodySealer(SECRET, {auth.AUTH_HEADER: GOLDEN_AUTH})
    sealer.update(b"tessera ")
    sealer.update(memoryview(b"body"))
    assert sealer.trailer().hex() == GOLDEN_BODY_MAC and auth.TRAILER_BYTES == 16
    assert auth.seal(SECRET, {auth.AUTH_HEADER: GOLDEN_AUTH}, b"tessera body") == \
        b"tessera body" + bytes.fromhex(GOLDEN_BODY_MAC)


def signed(now: float, **extra: str) -> CIMultiDict[str]:
    return CIMultiDict(auth.sign(SECRET, "PUT", SID_PATH, "n1", now=now, headers=extra,
                                 trailer=True))


def test_verifier_refuses_replays_requests_before_start_and_added_headers() -> None:
    start = time.time()
    v = auth.Verifier(SECRET, 300, "n1", started_at=start)
    h = signed(start + 1, **{"X-Tessera-Segments": "3"})
    assert v.check("PUT", SID_PATH, h, now=start + 2) is None
    assert v.check("PUT", SID_PATH, h, now=start + 3) == "replayed request"
    before = signed(start - 0.01)  # signed before this process started: a capture
    assert v.check("PUT", SID_PATH, before, now=start + 2) == "request predates the node's start"
    fresh = signed(start + 1)
    added = fresh.copy()
    added.add("X-Tessera-Replace", "1")  # a flag added on the way
    assert v.check("PUT", SID_PATH, added, now=start + 2) == "bad signature"
    doubled = fresh.copy()
    doubled.add("X-Tessera-Segments", "9")  # a repeated header is signed too
    assert v.check("PUT", SID_PATH, doubled, now=start + 2) == "bad signature"
    assert v.check("PUT", SID_PATH, fresh, now=start + 2) is None
    for bad_date in ("nan", "inf", "x"):
        h = signed(start + 1)
        h[auth.DATE_HEADER] = bad_date
        assert v.check("PUT", SID_PATH, h, now=start + 2) in ("bad date",
                                                               "request outside the replay window")


class _CountingWatermark(auth.Watermark):
    """A real watermark that records which thread wrote it, and how often."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.writers: list[int] = []

    def _persist(self, bound: float) -> None:
        self.writers.append(threading.get_ident())
        super()._persist(bound)


async def test_watermark_is_written_off_the_loop_once_for_concurrent_requests(
        tmp_path: Path) -> None:
    """The node's replay watermark (two fsyncs) is written on a worker thread, one write
    shared by every request waiting for it, and is on disk before any of them is accepted."""
    wm = _CountingWatermark(tmp_path / "replay-watermark")
    start = time.time()
    v = auth.Verifier(SECRET, 300, "n1", started_at=start - 1, watermark=wm)
    dates = [start + i / 100 for i in range(20)]
    requests = [signed(d) for d in dates]
    answers = await asyncio.gather(*(v.check_async("PUT", SID_PATH, h) for h in requests))
    assert answers == [None] * 20
    assert read_watermark(tmp_path / "replay-watermark")[0] >= max(dates)
    assert 1 <= len(wm.writers) <= 2 and threading.get_ident() not in wm.writers
    assert await v.check_async("PUT", SID_PATH, requests[0]) == "replayed request"


async def test_watermark_write_starts_before_requests_reach_it(tmp_path: Path) -> None:
    """A request within half of WATERMARK_AHEAD_S of the bound is accepted at once and starts
    the next write, so steady traffic does not wait for the watermark."""
    wm = _CountingWatermark(tmp_path / "replay-watermark")
    start = time.time()
    v = auth.Verifier(SECRET, 300, "n1", started_at=start - 1, watermark=wm)
    assert await v.check_async("PUT", SID_PATH, signed(start)) is None
    first = wm.bound
    near = first - auth.WATERMARK_AHEAD_S / 4  # covered, but close to the bound
    assert await v.check_async("PUT", SID_PATH, signed(near)) is None
    deadline = time.monotonic() + 60  # the write is a background fsync: bounds a hang
    while wm.bound <= first and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert wm.bound >= near + auth.WATERMARK_AHEAD_S - 0.001
    assert read_watermark(tmp_path / "replay-watermark")[0] == wm.bound


async def test_unpersistable_watermark_refuses_the_request(tmp_path: Path) -> None:
    home = tmp_path / "gone"
    home.mkdir()
    start = time.time()
    v = auth.Verifier(SECRET, 300, "n1", started_at=start - 1,
                      watermark=auth.Watermark(home / "replay-watermark"))
    home.rmdir()
    assert await v.check_async("PUT", SID_PATH, signed(start)) == \
        "cannot persist the replay watermark"


def test_whole_body_sealer_gives_the_streamed_body_mac() -> None:
    """The trailer of a body sent whole (one AES-GCM call, key object reused) is the MAC a
    streaming sealer computes and a node checks, for every request and body length."""
    secret = b"k" * 32
    whole = auth.WholeBodySealer(secret)
    for n in (0, 1, 15, 16, 17, 4096, 262_200):
        body = bytes(i % 251 for i in range(n))
        for _ in range(2):  # a fresh nonce per request: the reused key object keeps no state
            headers = auth.sign(secret, "PUT", "/v1/shards/x", "n1", trailer=True)
            streamed = auth.BodySealer(secret, headers)
            streamed.update(body[:n // 3])
            streamed.update(body[n // 3:])
            assert whole.trailer(headers, body) == streamed.trailer()


def test_a_plausible_request_is_checked_without_recording_its_nonce() -> None:
    secret = b"k" * 32
    v = auth.Verifier(secret, 60, "n1", started_at=time.time() - 10)
    h = CIMultiDict(auth.sign(secret, "PUT", "/v1/shards/x", "n1", trailer=True))
    assert v.plausible("PUT", "/v1/shards/x", h)
    assert v.plausible("PUT", "/v1/shards/x", h)  # nothing recorded: still plausible
    assert not v.plausible("PUT", "/v1/shards/y", h)
    assert not v.plausible("PUT", "/v1/shards/x", CIMultiDict(
        auth.sign(b"z" * 32, "PUT", "/v1/shards/x", "n1", trailer=True)))
    assert v.check("PUT", "/v1/shards/x", h) is None
    assert not v.plausible("PUT", "/v1/shards/x", h)  # now a replay


async def test_a_vouched_request_is_checked_again_for_what_can_change_since() -> None:
    """The lean front checks a PUT's signature once, from its head (`vouch`), and after its
    body came `check_vouched_async` runs the checks that time or other requests can change:
    a nonce recorded meanwhile (by this request or another with the same headers) and a
    date that has left the window are refused, as `check_async` refuses them."""
    secret = b"k" * 32
    v = auth.Verifier(secret, 60, "n1", started_at=time.time() - 10)
    h = CIMultiDict(auth.sign(secret, "PUT", "/v1/shards/x", "n1", trailer=True))
    found = v.vouch("PUT", "/v1/shards/x", h)
    assert found == (float(h[auth.DATE_HEADER]), h[auth.NONCE_HEADER])
    assert v.vouch("PUT", "/v1/shards/y", h) is None  # signed for another path
    assert v.vouch("PUT", "/v1/shards/x", CIMultiDict(
        auth.sign(b"z" * 32, "PUT", "/v1/shards/x", "n1", trailer=True))) is None
    assert await v.check_vouched_async(found) is None
    assert await v.check_vouched_async(found) == "replayed request"
    h2 = CIMultiDict(auth.sign(secret, "PUT", "/v1/shards/x", "n1", trailer=True))
    found2 = v.vouch("PUT", "/v1/shards/x", h2)
    assert found2 is not None
    assert await v.check_async("PUT", "/v1/shards/x", h2) is None  # the same one, first
    assert await v.check_vouched_async(found2) == "replayed request"
    stale = (time.time() - 61, "a" * 32)  # vouched, then its body took past the window
    assert await v.check_vouched_async(stale) == "request outside the replay window"
    early = (v.started_at - 1, "b" * 32)
    assert await v.check_vouched_async(early) == "request predates the node's start"


def test_the_whole_body_mac_is_the_streamed_body_mac() -> None:
    """A body received whole is MACed in one call (`whole_body_mac`); the tag is the one the
    streamed handler's `body_mac` computes, however the body is fed."""
    secret = b"k" * 32
    v = auth.Verifier(secret, 60, "n1")
    body = bytes(range(256)) * 1100
    for pieces in ([body], [body[:1000], body[1000:]], [memoryview(body)], []):
        headers = auth.sign(secret, "PUT", "/v1/shards/x", "n1", trailer=True)
        whole, streamed = v.whole_body_mac(headers), v.body_mac(headers)
        for p in pieces:
            whole.update(p)
            streamed.update(p)
        assert whole.digest() == streamed.digest() == whole.digest()
        sealed = auth.seal(secret, headers, b"".join(pieces))
        assert whole.digest() == sealed[-auth.TRAILER_BYTES:]
