"""Console sessions expire (idle and absolute), CSRF tokens compare exactly, failed logins are
throttled per address; the traffic sampler's rates and p95 come from counter differences."""

from __future__ import annotations

from gateway.console import sessions as cs
from gateway.console.samples import Sampler, Totals, rates, read_totals
from gateway.metrics import LATENCY_BUCKETS, Metrics


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_session_expires_when_idle_and_at_its_maximum_age() -> None:
    clock = Clock()
    store = cs.SessionStore(idle_s=60, max_s=150, clock=clock)
    token, s = store.open("AK")
    assert store.find(token) is s
    clock.now += 59
    assert store.find(token) is s  # used: the idle clock restarts
    clock.now += 59
    assert store.find(token) is s
    clock.now += 40  # 158 s after login: past the maximum age although active
    assert store.find(token) is None
    token, _ = store.open("AK")
    clock.now += 61
    assert store.find(token) is None and len(store) == 0


def test_find_without_touch_does_not_extend_and_close_ends() -> None:
    clock = Clock()
    store = cs.SessionStore(idle_s=60, max_s=1000, clock=clock)
    token, _ = store.open("AK")
    clock.now += 50
    assert store.find(token, touch=False) is not None
    clock.now += 20
    assert store.find(token) is None
    token, _ = store.open("AK")
    other, _ = store.open("BK")
    store.close(token)
    assert store.find(token) is None and store.find(other) is not None
    store.close_all("BK")
    assert store.find(other) is None
    assert store.find(None) is None and store.find("") is None and store.find("nope") is None


def test_csrf_token_must_match_exactly() -> None:
    store = cs.SessionStore(idle_s=60, max_s=100)
    _, s = store.open("AK")
    assert cs.csrf_ok(s, s.csrf)
    assert not cs.csrf_ok(s, None)
    assert not cs.csrf_ok(s, "")
    assert not cs.csrf_ok(s, s.csrf[:-1])
    assert not cs.csrf_ok(s, s.csrf + "x")
    assert not cs.csrf_ok(s, "\udcff" + s.csrf[1:])  # undecodable header bytes are not a crash
    _, other = store.open("AK")
    assert other.csrf != s.csrf and not cs.csrf_ok(s, other.csrf)


def fail_logins(store: cs.SessionStore, addr: str, clock: Clock | None = None,
                step_s: float = 0.0) -> None:
    """LOGIN_FAILURES failed logins from `addr`, each admitted, then `step_s` apart on
    `clock`."""
    for _ in range(cs.LOGIN_FAILURES):
        assert store.login_begin(addr)
        store.login_failed(addr)
        store.login_end(addr)
        if clock is not None:
            clock.now += step_s


def test_sessions_are_bounded_and_tokens_unique() -> None:
    store = cs.SessionStore(idle_s=60, max_s=100, clock=Clock())
    tokens = {store.open("AK")[0] for _ in range(cs.MAX_SESSIONS + 5)}
    assert len(tokens) == cs.MAX_SESSIONS + 5 and len(store) == cs.MAX_SESSIONS


def test_failed_logins_are_throttled_per_address_for_a_window() -> None:
    clock = Clock()
    store = cs.SessionStore(idle_s=60, max_s=100, clock=clock)
    fail_logins(store, "10.0.0.1")
    assert not store.login_begin("10.0.0.1")
    assert store.login_begin("10.0.0.2")
    store.login_end("10.0.0.2")
    clock.now += cs.LOGIN_WINDOW_S + 1
    assert store.login_begin("10.0.0.1")


def test_attempts_being_checked_count_against_the_limit() -> None:
    """A burst of concurrent logins: each admitted attempt holds a place until it ends, so no
    more than LOGIN_FAILURES guesses from one address are ever checked in a window."""
    store = cs.SessionStore(idle_s=60, max_s=100, clock=Clock())
    for _ in range(cs.LOGIN_FAILURES):
        assert store.login_begin("10.0.0.1")  # none has ended (or failed) yet
    assert not store.login_begin("10.0.0.1")
    store.login_end("10.0.0.1")  # one succeeded: its place is free again
    assert store.login_begin("10.0.0.1")
    for _ in range(cs.LOGIN_FAILURES):
        store.login_failed("10.0.0.1")
        store.login_end("10.0.0.1")
    assert not store.login_begin("10.0.0.1")


def test_a_refusal_says_when_to_retry() -> None:
    """Retry-After is the wait until the oldest failure that keeps the limit reached leaves
    the window (whole seconds, at least 1), not a fixed guess."""
    clock = Clock()
    store = cs.SessionStore(idle_s=60, max_s=100, clock=clock)
    fail_logins(store, "10.0.0.1", clock, step_s=10)
    assert not store.login_begin("10.0.0.1")
    wait = store.login_retry_s("10.0.0.1")
    assert wait == cs.LOGIN_WINDOW_S - 10 * cs.LOGIN_FAILURES
    clock.now += wait - 1
    assert not store.login_begin("10.0.0.1")
    clock.now += 1
    assert store.login_begin("10.0.0.1")  # admitted exactly when Retry-After said
    assert store.login_retry_s("10.0.0.2") == 1  # nothing recorded: no long wait


def test_rates_and_p95_from_counter_differences() -> None:
    a = Totals(t=100.0)
    b = Totals(t=110.0, requests=50, errors=5, bytes_in=1000, bytes_out=2000, latency_sum=2.5,
               latency_count=50)
    # cumulative buckets: 40 requests within 10 ms, 46 within 50 ms, 48 within 100 ms, 50 all
    b.buckets = [40 if le <= 0.01 else 46 if le <= 0.05 else 48 if le <= 0.1 else 50
                 for le in [*LATENCY_BUCKETS, float("inf")]]
    r = rates(a, b)
    assert r["requests_s"] == 5.0 and r["errors_s"] == 0.5
    assert r["bytes_in_s"] == 100.0 and r["bytes_out_s"] == 200.0
    assert r["latency_mean_ms"] == 50.0 and r["latency_p95_ms"] == 100.0  # 47.5 of 50
    idle = rates(b, Totals(t=120.0, **{k: getattr(b, k) for k in (
        "requests", "errors", "bytes_in", "bytes_out", "latency_sum", "latency_count")}))
    assert idle["requests_s"] == 0 and idle["latency_mean_ms"] is None


async def test_sampler_keeps_a_bounded_ring_of_real_counter_readings() -> None:
    m = Metrics()

    async def text() -> bytes:
        return m.render()

    s = Sampler(text, interval_s=10, keep=3)
    await s.tick(now=1000.0)
    for i in range(5):
        m.request("GetObject", 200, 0.003)
        m.request("PutObject", 503, 0.2)
        m.bytes_in.inc(100)
        await s.tick(now=1000.0 + 10 * (i + 1))
        assert len(s.samples) == min(i + 1, 3)
    last = s.samples[-1]
    assert last["requests_s"] == 0.2 and last["errors_s"] == 0.1
    assert last["bytes_in_s"] == 10.0 and last["latency_p95_ms"] == 250.0


def test_totals_of_several_worker_processes_add_up() -> None:
    """The charts read the exposition summed over the gateway's worker processes."""
    from gateway.metrics import merge_expositions

    a, b = Metrics(), Metrics()
    a.request("GetObject", 200, 0.01)
    b.request("GetObject", 200, 0.01)
    b.request("HeadObject", 500, 0.01)
    tot = read_totals(merge_expositions([a.render(), b.render()]))
    assert tot.requests == 3 and tot.errors == 1 and tot.latency_count == 3


def test_every_console_file_is_package_data() -> None:
    """A non-editable `pip install` ships the page: each static file matches a package-data
    glob of pyproject.toml (a wheel built from this tree held them all)."""
    import fnmatch
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["gateway.console"]
    static = root / "gateway" / "console" / "static"
    files = sorted(p.relative_to(static.parent).as_posix() for p in static.iterdir())
    assert {"static/index.html", "static/console.js", "static/console.css"} <= set(files)
    for f in files:
        assert any(fnmatch.fnmatch(f, g) for g in globs), f"{f} is not package data"


def _parsed_totals(text: bytes) -> Totals:
    """The charts' counters read with Prometheus' own text parser (the reference)."""
    from prometheus_client.parser import text_string_to_metric_families

    tot = Totals(t=0.0)
    bounds = [*LATENCY_BUCKETS, float("inf")]
    for fam in text_string_to_metric_families(text.decode()):
        for s in fam.samples:
            if s.name == "tessera_s3_requests_total":
                tot.requests += s.value
                tot.errors += s.value if s.labels["status"].startswith("5") else 0
            elif s.name == "tessera_s3_bytes_in_total":
                tot.bytes_in += s.value
            elif s.name == "tessera_s3_bytes_out_total":
                tot.bytes_out += s.value
            elif s.name == "tessera_s3_request_seconds_sum":
                tot.latency_sum += s.value
            elif s.name == "tessera_s3_request_seconds_count":
                tot.latency_count += s.value
            elif s.name == "tessera_s3_request_seconds_bucket":
                tot.buckets[bounds.index(float(s.labels["le"]))] += s.value
    return tot


def test_the_line_scan_reads_what_the_text_parser_reads() -> None:
    import random

    rnd = random.Random(7)
    m = Metrics()
    for _ in range(300):
        m.request(rnd.choice(["GetObject", "PutObject", "ListObjectsV2"]),
                  rnd.choice([200, 204, 404, 500, 503]), rnd.expovariate(20))
        m.bytes_in.inc(rnd.randrange(1 << 20))
        m.bytes_out.inc(rnd.randrange(1 << 20))
        m.tenant_request(rnd.choice(["a", "b"]))
    text = m.render()
    got, want = read_totals(text, now=0.0), _parsed_totals(text)
    assert got == want and got.requests == 300 and got.errors > 0


async def test_the_charts_read_only_their_samples_of_every_worker(tmp_path) -> None:  # noqa: ANN001
    """Each worker renders just `SAMPLE_NAMES` for the sampler (Prometheus' `name[]`), not its
    whole exposition, and the readings of all workers add up."""
    from aiohttp import web

    from gateway.app import _metrics_app, _peer_metrics
    from gateway.console.samples import SAMPLE_NAMES

    own, peer = Metrics(), Metrics()
    own.request("GetObject", 200, 0.01)
    peer.request("GetObject", 200, 0.01)
    peer.request("HeadObject", 500, 0.3)
    peer.bytes_out.inc(1000)
    runner = web.AppRunner(_metrics_app(peer))
    await runner.setup()
    sock = tmp_path / "w1.sock"
    await web.UnixSite(runner, str(sock)).start()
    try:
        text = await _peer_metrics(sock, SAMPLE_NAMES)
        whole = await _peer_metrics(sock)
    finally:
        await runner.cleanup()
    names = {line.split("{")[0].split(" ")[0] for line in text.decode().splitlines()
             if not line.startswith("#")}
    assert names == set(SAMPLE_NAMES)
    assert b"tessera_pipeline_stage_seconds" in whole
    assert b"tessera_pipeline_stage_seconds" not in text
    tot = read_totals(own.render(SAMPLE_NAMES) + text)
    assert tot.requests == 3 and tot.errors == 1 and tot.latency_count == 3
    assert tot.bytes_out == 1000 and tot == read_totals(merge_two(own, peer), now=tot.t)


def merge_two(a: Metrics, b: Metrics) -> bytes:
    from gateway.metrics import merge_expositions

    return merge_expositions([a.render(), b.render()])


def test_requests_from_another_origin_are_told_apart() -> None:
    """Fetch Metadata names the requesting page's site; a request's Origin, when it has one,
    must be this host, whatever its method."""
    from aiohttp.test_utils import make_mocked_request

    def foreign(method: str, **headers: str) -> bool:
        return cs.from_another_origin(make_mocked_request(
            method, "/admin/v1/keys", headers={"Host": "127.0.0.1:9001", **headers}))

    assert not foreign("GET") and not foreign("POST")  # no browser metadata: scripts, curl
    assert not foreign("GET", **{"Sec-Fetch-Site": "same-origin"})
    assert not foreign("GET", **{"Sec-Fetch-Site": "none"})  # typed into the address bar
    assert foreign("GET", **{"Sec-Fetch-Site": "same-site"})  # another port of this host
    assert foreign("GET", **{"Sec-Fetch-Site": "cross-site"})
    assert not foreign("POST", Origin="http://127.0.0.1:9001")
    assert foreign("POST", Origin="http://127.0.0.1:9000") and foreign("POST", Origin="null")
    # browsers without Fetch Metadata (Safari < 16.4) still send Origin cross-origin: reads
    # are refused on it too, not only changes
    assert not foreign("GET", Origin="http://127.0.0.1:9001")
    assert foreign("GET", Origin="http://127.0.0.1:9000") and foreign("HEAD", Origin="null")


def test_origin_null_is_same_origin_only_when_fetch_metadata_says_so() -> None:
    """Firefox's fetch (and Chrome's form posts) send `Origin: null` on a same-origin change
    under a strict Referrer-Policy, with `Sec-Fetch-Site: same-origin`: every console change
    from Firefox was refused. An opaque origin (sandboxed frame, data: page, a redirect
    through another site) sends null with cross-site, and null alone stays foreign."""
    from aiohttp.test_utils import make_mocked_request

    def foreign(method: str, **headers: str) -> bool:
        return cs.from_another_origin(make_mocked_request(
            method, "/admin/v1/tenants", headers={"Host": "127.0.0.1:9001", **headers}))

    firefox = {"Origin": "null", "Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors",
               "Sec-Fetch-Dest": "empty"}
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        assert not foreign(method, **firefox), method
    assert foreign("POST", Origin="null")
    assert foreign("POST", **{**firefox, "Sec-Fetch-Site": "cross-site"})
    assert foreign("POST", **{**firefox, "Sec-Fetch-Site": "same-site"})
    assert foreign("POST", **{**firefox, "Sec-Fetch-Site": "none"})


def test_the_origin_is_compared_with_the_host_the_guard_checked() -> None:
    """An absolute-form target (`POST http://evil.example/... HTTP/1.1`, `Host: 127.0.0.1`)
    makes aiohttp's request.host `evil.example`, while the Host guard checked the Host
    header: an Origin of the target's host passed the Origin check, the listener's own
    was refused. Both now compare with the Host header."""
    from aiohttp.test_utils import make_mocked_request

    def foreign(origin: str) -> bool:
        return cs.from_another_origin(make_mocked_request(
            "POST", "http://evil.example/admin/v1/tenants",
            headers={"Host": "127.0.0.1:9001", "Origin": origin}))

    assert foreign("http://evil.example")
    assert not foreign("http://127.0.0.1:9001")


def test_a_cookie_is_secure_when_the_browser_came_over_tls() -> None:
    """Behind a TLS proxy the gateway sees plain HTTP: the proxy's X-Forwarded-Proto or
    Forwarded proto (the first hop's) says https, and the session cookie must be Secure."""
    from aiohttp.test_utils import make_mocked_request

    def tls(**headers: str) -> bool:
        return cs.came_over_tls(make_mocked_request("POST", "/console/api/login",
                                                    headers=headers))

    assert not tls() and not tls(**{"X-Forwarded-Proto": "http"})
    assert tls(**{"X-Forwarded-Proto": "https"}) and tls(**{"X-Forwarded-Proto": "HTTPS, http"})
    assert tls(Forwarded='for=192.0.2.1;proto=https;by=203.0.113.7')
    assert tls(Forwarded='proto="https", proto=http')
    assert not tls(Forwarded="for=192.0.2.1;proto=http")
