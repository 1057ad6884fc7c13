"""The web console (issue 15 section 2) against a real cluster: plain HTTP checks of its
session, CSRF and security headers, then Debian's Chromium driven by Playwright (headless) for
what an operator does: log in, see 3 zones and 15 nodes, create a tenant and a key, revoke it,
watch a killed node's card turn unhealthy, log out."""

from __future__ import annotations

import contextlib
import http.server
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import pytest
import requests
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from ops.admincli import admin_request
from ops.localports import free_port
from storage.node_reason import node_reason
from tests.integration.cluster import LocalCluster, audit_log, files_holding, wait_for

CHROMIUM = os.environ.get("TESSERA_CHROMIUM", "/usr/bin/chromium")
WAIT_MS = 60_000  # generous: the machine is shared; every wait ends on a page condition


@pytest.fixture(scope="module")
def console_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A cluster of this module's own: the last test kills one of its nodes."""
    c = LocalCluster(tmp_path_factory.mktemp("console")).start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not (shutil.which(CHROMIUM) or os.path.exists(CHROMIUM)):
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (as .ci/run does)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield b
        b.close()


def base(c: LocalCluster) -> str:
    return f"http://127.0.0.1:{c.admin_port}"


def login_session(c: LocalCluster) -> tuple[requests.Session, str]:
    """A logged-in HTTP session (cookie jar) and its CSRF token."""
    s = requests.Session()
    r = s.post(base(c) + "/console/api/login", json={
        "access_key": c.env["TESSERA_ADMIN_ACCESS_KEY"],
        "secret_key": c.env["TESSERA_ADMIN_SECRET_KEY"]}, timeout=30)
    assert r.status_code == 200, r.text
    return s, r.json()["csrf"]


def audit(c: LocalCluster) -> list[dict]:
    return audit_log(c.data)


def browser_login(browser: Browser, c: LocalCluster) -> Page:
    page = browser.new_context().new_page()
    page.goto(base(c) + "/console/")
    page.fill("#login-key", c.env["TESSERA_ADMIN_ACCESS_KEY"])
    page.fill("#login-secret", c.env["TESSERA_ADMIN_SECRET_KEY"])
    page.click("#login-submit")
    expect(page.locator("#app")).to_be_visible(timeout=WAIT_MS)
    return page


# -- plain HTTP: headers, session, CSRF --------------------------------------------------------

def test_console_page_is_served_with_security_headers(console_cluster: LocalCluster) -> None:
    r = requests.get(base(console_cluster) + "/console/", timeout=30)
    assert r.status_code == 200 and "<title>Tessera console</title>" in r.text
    assert r.headers["X-Frame-Options"] == "DENY"
    csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    for name, kind in (("console.js", "text/javascript"), ("console.css", "text/css")):
        r = requests.get(base(console_cluster) + "/console/" + name, timeout=30)
        assert r.status_code == 200 and r.headers["Content-Type"].startswith(kind)
    assert requests.get(base(console_cluster) + "/console/../tessera.env",
                        timeout=30).status_code == 404


def test_login_sets_a_strict_httponly_cookie(console_cluster: LocalCluster) -> None:
    """Secure too when a TLS proxy in front says the browser came over https (the gateway
    itself sees plain HTTP), so the session never travels unencrypted."""
    def login(**headers: str) -> requests.Response:
        return requests.post(base(console_cluster) + "/console/api/login", json={
            "access_key": console_cluster.env["TESSERA_ADMIN_ACCESS_KEY"],
            "secret_key": console_cluster.env["TESSERA_ADMIN_SECRET_KEY"]}, headers=headers,
            timeout=30)

    r = login()
    assert r.status_code == 200
    cookie = r.headers["Set-Cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    assert "; secure" not in cookie  # plain HTTP to loopback: a Secure cookie is not wanted
    assert "secret" not in r.text.lower()  # the answer names who, never the secret
    for proxied in ({"X-Forwarded-Proto": "https"}, {"Forwarded": "for=192.0.2.1;proto=https"}):
        r = login(**proxied)
        assert r.status_code == 200 and "; secure" in r.headers["Set-Cookie"].lower(), proxied


def test_wrong_secret_or_tenant_key_cannot_log_in(console_cluster: LocalCluster) -> None:
    url = base(console_cluster) + "/console/api/login"
    bad = requests.post(url, json={"access_key": console_cluster.env["TESSERA_ADMIN_ACCESS_KEY"],
                                   "secret_key": "not-the-secret"}, timeout=30)
    assert bad.status_code == 403 and bad.json()["error"]["code"] == "InvalidCredentials"
    assert "Set-Cookie" not in bad.headers
    tenant = requests.post(url, json={"access_key": console_cluster.env["AWS_ACCESS_KEY_ID"],
                                      "secret_key": console_cluster.env["AWS_SECRET_ACCESS_KEY"]},
                           timeout=30)
    assert tenant.status_code == 403  # a tenant's S3 key is not an admin key
    denied = [e for e in audit(console_cluster) if e["action"] == "console.login"
              and e["result"] == "denied:InvalidCredentials"]
    assert len(denied) >= 2


def test_changes_without_session_or_csrf_are_refused(console_cluster: LocalCluster) -> None:
    url = base(console_cluster) + "/admin/v1/tenants"
    # no credential at all: the admin API's answer to an unsigned request
    assert requests.post(url, json={"name": "nosession"}, timeout=30).status_code == 401
    # a forged session cookie
    r = requests.post(url, json={"name": "nosession"}, timeout=30,
                      cookies={"tessera_console": "forged"}, headers={"X-CSRF-Token": "x"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "InvalidSession"
    s, csrf = login_session(console_cluster)
    # a live session but no CSRF token, a forged one, another site's Origin
    assert s.post(url, json={"name": "nocsrf"}, timeout=30).status_code == 403
    r = s.post(url, json={"name": "nocsrf"}, headers={"X-CSRF-Token": csrf[:-2] + "xx"},
               timeout=30)
    assert r.status_code == 403 and r.json()["error"]["code"] == "InvalidCSRFToken"
    r = s.post(url, json={"name": "nocsrf"}, timeout=30,
               headers={"X-CSRF-Token": csrf, "Origin": "http://evil.example"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "CrossOrigin"
    assert s.post(base(console_cluster) + "/console/api/logout", timeout=30).status_code == 403
    # another origin's page of this site (the S3 port) never reads the session's CSRF token
    r = s.get(base(console_cluster) + "/console/api/session", timeout=30,
              headers={"Sec-Fetch-Site": "same-site"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "CrossOrigin"
    assert csrf not in r.text
    # a browser without Fetch Metadata (Safari before 16.4) still sends another page's
    # Origin: its reads are refused on it too, the admin routes' and the session's
    for path in ("/console/api/session", "/admin/v1/tenants"):
        r = s.get(base(console_cluster) + path, timeout=30,
                  headers={"Origin": "http://127.0.0.1:9"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "CrossOrigin", path
        assert csrf not in r.text and "tenants" not in r.json()
    names = [t["name"] for t in s.get(url, timeout=30).json()["tenants"]]
    assert "nosession" not in names and "nocsrf" not in names
    # the right token: the same admin route, audited as the admin key, via the console
    r = s.post(url, json={"name": "viacsrf"}, headers={"X-CSRF-Token": csrf}, timeout=30)
    assert r.status_code == 201, r.text
    entry = [e for e in audit(console_cluster) if e["action"] == "tenant.create"][-1]
    assert entry == {**entry, "who": console_cluster.env["TESSERA_ADMIN_ACCESS_KEY"],
                     "tenant": "viacsrf", "result": "ok", "via": "console"}
    refusals = {e["result"] for e in audit(console_cluster) if e["action"] == "tenant.create"}
    assert {"denied:InvalidSession", "denied:InvalidCSRFToken", "denied:CrossOrigin"} <= refusals
    # logout ends the session server side: the cookie no longer works
    assert s.post(base(console_cluster) + "/console/api/logout",
                  headers={"X-CSRF-Token": csrf}, timeout=30).status_code == 200
    r = requests.get(url, cookies={"tessera_console": _cookie(s)}, timeout=30) \
        if _cookie(s) else s.get(url, timeout=30)
    assert r.status_code in (401, 403)


def test_firefoxs_own_changes_are_not_refused_as_cross_origin(
        console_cluster: LocalCluster) -> None:
    """The listener sent `Referrer-Policy: no-referrer`, under which Fetch makes a
    same-origin POST/PATCH/DELETE carry `Origin: null` (Firefox's fetch, Chrome's form
    posts), and every console change from Firefox was refused 403 CrossOrigin. The policy is
    now same-origin (a same-origin request states its real Origin, other origins still get
    no referrer), and null counts as same-origin only beside `Sec-Fetch-Site: same-origin`.
    The requests carry what Firefox sends for the console's own fetch()."""
    r = requests.get(base(console_cluster) + "/console/", timeout=30)
    assert r.headers["Referrer-Policy"] == "same-origin"
    s, csrf = login_session(console_cluster)
    firefox = {"X-CSRF-Token": csrf, "Origin": "null", "Sec-Fetch-Site": "same-origin",
               "Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty",
               "Referer": base(console_cluster) + "/console/",
               "User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 "
                             "Firefox/140.0"}
    url = base(console_cluster) + "/admin/v1/tenants"
    name = f"firefox-{uuid.uuid4().hex[:8]}"
    r = s.post(url, json={"name": name}, headers=firefox, timeout=30)
    assert r.status_code == 201, r.text
    r = s.patch(f"{url}/{name}", json={"public_access_block": {"BlockPublicAcls": True}},
                headers=firefox, timeout=30)
    assert r.status_code == 200, r.text
    r = s.delete(f"{url}/{name}", headers=firefox, timeout=30)
    assert r.status_code in (200, 204), r.text
    # null from anything but a same-origin request stays foreign
    for site in (None, "cross-site", "same-site", "none"):
        headers = {**firefox, "Sec-Fetch-Site": site} if site else {
            k: v for k, v in firefox.items() if k != "Sec-Fetch-Site"}
        r = s.post(url, json={"name": f"{name}-x"}, headers=headers, timeout=30)
        assert r.status_code == 403 and r.json()["error"]["code"] == "CrossOrigin", site


def _cookie(s: requests.Session) -> str | None:
    return s.cookies.get("tessera_console")


def test_inventory_routes(console_cluster: LocalCluster) -> None:
    """Buckets with object counts and sizes, the queues, a filtered audit log."""
    s3 = console_cluster.client()
    s3.create_bucket(Bucket="console-inv")
    for i in range(3):
        s3.put_object(Bucket="console-inv", Key=f"k{i}", Body=b"x" * (1000 + i))
    s3.put_object(Bucket="console-inv", Key="striped", Body=b"y" * 100_000)  # not inline
    s, _ = login_session(console_cluster)
    api = base(console_cluster) + "/admin/v1"
    rows = {b["name"]: b for b in s.get(api + "/buckets", timeout=30).json()["buckets"]}
    assert rows["console-inv"]["objects"] == 4 and rows["console-inv"]["bytes"] == 103_003
    q = s.get(api + "/queues", timeout=30).json()
    assert q["restores_pending"] == 0 and q["restores"] == [] and "lifecycle" in q
    entries = s.get(api + "/audit", params={"action": "bucket.", "limit": 5},
                    timeout=30).json()["entries"]
    assert entries and all(e["action"].startswith("bucket.") for e in entries)
    assert s.get(api + "/audit", params={"limit": "x"}, timeout=30).status_code == 400


    def counted() -> bool:  # the samples cover all time: the requests above show up once a
        # reading spans at least half a second (a gateway that just started may not yet)
        series = s.get(api + "/metrics/series", timeout=30).json()
        return any(x["requests_s"] > 0 for x in series["samples"])

    wait_for(counted, "the S3 requests in the console's series", timeout=60)
    # what a zone loss would do now: every zone holds at most m shards of a stripe
    st = s.get(api + "/status", timeout=30).json()["stripes"]
    assert st["scanned"] >= 1 and set(st["zone_loss"]) == {"az1", "az2", "az3"}
    for row in st["zone_loss"].values():
        assert sum(row.values()) == st["scanned"] and row["unreadable"] == 0


# -- the browser ---------------------------------------------------------------------------------

def test_browser_tenant_and_key(console_cluster: LocalCluster, browser: Browser) -> None:
    page = browser_login(browser, console_cluster)
    page.click("#tabs button[data-tab=tenants]")
    page.fill("#tenant-name", "webtenant")
    page.click("#tenant-form button[type=submit]")
    card = page.locator(".tenant[data-tenant=webtenant]")
    expect(card).to_be_visible(timeout=WAIT_MS)
    card.locator("button.create-key").click()
    expect(page.locator("#secret-box")).to_be_visible(timeout=WAIT_MS)
    ak = page.inner_text("#secret-ak")
    sk = page.inner_text("#secret-sk")
    assert ak and len(sk) >= 30
    row = card.locator("table.keys tr", has_text=ak)
    expect(row).to_contain_text("active", timeout=WAIT_MS)
    page.click("#secret-done")
    expect(page.locator("#secret-box")).to_be_hidden()
    assert sk not in page.content()  # shown once, then gone from the page
    row.locator("button.two-step").click()
    row.locator("button.two-step").click()  # "Confirm revoke"
    expect(card.locator("table.keys tr", has_text=ak)).to_contain_text("revoked",
                                                                       timeout=WAIT_MS)
    actions = {(e["action"], e.get("via"), e["result"]) for e in audit(console_cluster)}
    assert {("tenant.create", "console", "ok"), ("key.create", "console", "ok"),
            ("key.revoke", "console", "ok")} <= actions
    # no secret reached a log: the new key's, the admin's, the session cookie's
    cookie = [c["value"] for c in page.context.cookies() if c["name"] == "tessera_console"]
    assert cookie
    needles = [sk.encode(), console_cluster.env["TESSERA_ADMIN_SECRET_KEY"].encode(),
               cookie[0].encode()]
    assert files_holding(console_cluster.data / "logs", needles) == []
    assert files_holding(console_cluster.data / "audit", needles) == []
    # shred only after the tenant's name is typed
    shred = card.locator("form.shred")
    shred.locator("input").fill("webtenan")
    shred.locator("button").click()
    expect(page.locator("#flash")).to_contain_text("type the tenant's name", timeout=WAIT_MS)
    shred.locator("input").fill("webtenant")
    shred.locator("button").click()
    expect(page.locator(".tenant[data-tenant=webtenant] h3")).to_contain_text(
        "shredded", timeout=WAIT_MS)
    assert ("tenant.shred", "console", "ok") in {
        (e["action"], e.get("via"), e["result"]) for e in audit(console_cluster)}
    page.click("#logout")
    expect(page.locator("#login")).to_be_visible(timeout=WAIT_MS)
    page.context.close()


def test_browser_reuses_a_deleted_tenants_name_only_when_ticked(
        console_cluster: LocalCluster, browser: Browser) -> None:
    """tenant22: the create form takes a deleted tenant's name only with its reuse box
    ticked (else the 409 says why); the new tenant's card lists none of the old one's keys."""
    s, csrf = login_session(console_cluster)
    url = base(console_cluster) + "/admin/v1"
    hdrs = {"X-CSRF-Token": csrf}
    assert s.post(url + "/tenants", json={"name": "webgone"}, headers=hdrs,
                  timeout=30).status_code == 201
    old = s.post(url + "/keys", json={"tenant": "webgone"}, headers=hdrs, timeout=30).json()
    assert s.delete(url + "/tenants/webgone", headers=hdrs, timeout=30).status_code == 200
    page = browser_login(browser, console_cluster)
    page.click("#tabs button[data-tab=tenants]")
    page.fill("#tenant-name", "webgone")
    page.click("#tenant-form button[type=submit]")
    expect(page.locator("#flash")).to_contain_text("reuse a deleted tenant's name",
                                                   timeout=WAIT_MS)
    page.fill("#tenant-name", "webgone")
    page.check("#tenant-reuse")
    page.click("#tenant-form button[type=submit]")
    card = page.locator(".tenant[data-tenant=webgone]")
    expect(card).to_contain_text("no access keys", timeout=WAIT_MS)
    assert old["access_key_id"] not in card.inner_text()
    expect(page.locator("#tenant-reuse")).not_to_be_checked()
    page.context.close()


def test_browser_buckets_audit_and_charts(console_cluster: LocalCluster, browser: Browser) -> None:
    s3 = console_cluster.client()
    s3.create_bucket(Bucket="console-web")
    s3.put_object(Bucket="console-web", Key="a", Body=b"z" * 5000)
    page = browser_login(browser, console_cluster)
    page.click("#tabs button[data-tab=buckets]")
    row = page.locator("#buckets tr", has_text="console-web")
    expect(row).to_contain_text("4.9 KiB", timeout=WAIT_MS)
    expect(row.locator("td").nth(3)).to_have_text("1")
    page.click("#tabs button[data-tab=audit]")
    page.fill("#audit-action", "bucket.")
    page.click("#audit-form button[type=submit]")
    rows = page.locator("#audit tr")
    expect(rows.nth(1)).to_contain_text("bucket.list", timeout=WAIT_MS)
    # only the filter's rows: the header is the one row without "bucket." (the tab's own
    # unfiltered listing may show first, and must then be replaced)
    expect(rows.filter(has_not_text="bucket.")).to_have_count(1, timeout=WAIT_MS)
    admin_request("POST", "/tenants/default/volumes", {"name": "webvol", "size": "1G"},
                  env=console_cluster.env)
    admin_request("POST", "/tenants/default/volumes/webvol/snapshots", {"name": "s1"},
                  env=console_cluster.env)
    admin_request("POST", "/tenants/default/volumes/webvol/clone",
                  {"snapshot": "s1", "name": "webclone"}, env=console_cluster.env)
    gen = admin_request("GET", "/tenants/default/volumes/webclone",
                        env=console_cluster.env)["base"]["gen"]
    page.click("#tabs button[data-tab=volumes]")
    vol = page.locator("#volumes tr", has_text="webvol").filter(has_not_text="webclone")
    expect(vol).to_contain_text("1.0 GiB", timeout=WAIT_MS)
    expect(vol).to_contain_text("detached")
    expect(vol).to_contain_text("s1")
    # A clone names its origin as the CLI does ("webvol gen N"), not a bare "@" (newuser15).
    clone = page.locator("#volumes tr", has_text="webclone")
    expect(clone.locator("td").last).to_have_text(f"webvol gen {gen}")
    page.click("#tabs button[data-tab=charts]")
    expect(page.locator("#chart-requests path[data-series=requests_s]")).to_have_count(
        1, timeout=WAIT_MS)
    # Legends name the series in words, not the JSON keys (newuser16: "requests_s" at 6 px).
    expect(page.locator("#chart-requests text.t0")).to_have_text("\u25a0 requests/s")
    expect(page.locator("#chart-latency text.t1")).to_have_text("\u25a0 p95")
    page.context.close()


def test_browser_shows_attacker_text_as_text(console_cluster: LocalCluster,
                                             browser: Browser) -> None:
    """An outsider controls the route parameters a refused admin request is audited with:
    the audit tab shows them as text, never as markup (no element made, no script run)."""
    payload = "<img src=x onerror=window.xss=1>"
    r = requests.get(base(console_cluster) + "/admin/v1/tenants/" + quote(payload, safe=""),
                     timeout=30)
    assert r.status_code == 401, r.text
    page = browser_login(browser, console_cluster)
    page.click("#tabs button[data-tab=audit]")
    page.fill("#audit-action", "tenant.show")
    page.fill("#audit-result", "denied:")
    page.click("#audit-form button[type=submit]")
    expect(page.locator("#audit tr", has_text=payload)).to_have_count(1, timeout=WAIT_MS)
    assert page.locator("#audit img").count() == 0
    assert page.evaluate("window.xss") is None
    page.context.close()


# Counts the page's audit answers fully handled: the count goes up in a task queued after
# the answer's promise settles, so after every await chained on it (rendering included).
COUNT_HANDLED = """
  window.handled = 0;
  const json = Response.prototype.json;
  Response.prototype.json = function () {
    const audit = this.url.includes("/admin/v1/audit");
    return json.call(this).finally(() => {
      if (audit) setTimeout(() => { window.handled++; }, 0);
    });
  };
"""


def test_browser_an_older_audit_answer_does_not_replace_the_filter(
        console_cluster: LocalCluster, browser: Browser) -> None:
    """Opening the audit tab lists it unfiltered; a filter given meanwhile asks again. When
    the unfiltered answer came last, it replaced the filter's rows with every entry."""
    page = browser_login(browser, console_cluster)
    page.add_init_script(COUNT_HANDLED)
    page.reload()
    expect(page.locator("#app")).to_be_visible(timeout=WAIT_MS)
    held = []

    def hold_unfiltered(route: Route) -> None:
        if "action=" in route.request.url:
            route.continue_()
        else:
            held.append(route)

    page.route("**/admin/v1/audit?*", hold_unfiltered)
    page.click("#tabs button[data-tab=audit]")  # the unfiltered listing, held
    page.fill("#audit-action", "console.login")
    page.click("#audit-form button[type=submit]")
    rows = page.locator("#audit tr")
    expect(rows.nth(1)).to_contain_text("console.login", timeout=WAIT_MS)
    assert len(held) == 1
    before = page.evaluate("window.handled")
    held[0].continue_()  # the older answer arrives last
    wait_for(lambda: page.evaluate("window.handled") > before, "the older answer handled")
    texts = rows.all_inner_texts()[1:]
    assert texts and all("console.login" in t for t in texts), texts
    page.context.close()


def test_browser_shows_a_tenants_object_key_as_text(console_cluster: LocalCluster,
                                                    browser: Browser) -> None:
    """A tenant chooses its object keys, and the queues tab lists pending restores by key:
    markup, quotes, '&', a right-to-left override and an astral character read back exactly
    as text (no element made, no script run). A Bulk restore stays pending for hours."""
    key = "<img src=x onerror=window.xss=1>\"'&amp;\u202e\U0001f600"
    s3 = console_cluster.client()
    s3.create_bucket(Bucket="console-keys")
    s3.put_object(Bucket="console-keys", Key=key, Body=b"k", StorageClass="GLACIER")
    s3.restore_object(Bucket="console-keys", Key=key,
                      RestoreRequest={"Days": 1, "GlacierJobParameters": {"Tier": "Bulk"}})
    page = browser_login(browser, console_cluster)
    page.click("#tabs button[data-tab=queues]")
    row = page.locator("#restores tr", has_text="console-keys")
    expect(row).to_have_count(1, timeout=WAIT_MS)
    expect(row.locator("td").nth(1)).to_have_text(key)
    assert page.locator("#restores img").count() == 0
    assert page.evaluate("window.xss") is None
    page.context.close()


STEAL = """<!doctype html><script>
(async () => {
  const d = new Date().toISOString().replace(/[-:]/g, "").replace(/[.][0-9]+/, "");
  const r = await fetch("/console-steal/nothing", {credentials: "include", headers: {
    "x-amz-date": d, "x-amz-content-sha256": "UNSIGNED-PAYLOAD",
    "Authorization": "AWS4-HMAC-SHA256 Credential=AKID/" + d.slice(0, 8) +
      "/REGION/s3/aws4_request, SignedHeaders=cookie;host;x-amz-content-sha256;x-amz-date, " +
      "Signature=" + "0".repeat(64)}});
  window.answer = r.status + " " + await r.text();
})();
</script>"""


def test_browser_a_tenants_page_cannot_read_the_session_cookie(console_cluster: LocalCluster,
                                                               browser: Browser) -> None:
    """A tenant's HTML object on the S3 port, opened by a logged-in admin: the browser sends
    it the console's cookie too (cookies are per host, not per port), and its request listed
    `cookie` in SignedHeaders, so the SignatureDoesNotMatch error's CanonicalRequest handed
    it the HttpOnly session, with which anyone anywhere got the CSRF token and every admin
    action. The error withholds the cookie now."""
    c = console_cluster
    s3 = c.client()
    s3.create_bucket(Bucket="console-steal")
    html = STEAL.replace("AKID", c.env["AWS_ACCESS_KEY_ID"]).replace(
        "REGION", c.env["AWS_DEFAULT_REGION"])
    s3.put_object(Bucket="console-steal", Key="page.html", Body=html.encode(),
                  ContentType="text/html")
    link = s3.generate_presigned_url("get_object", Params={"Bucket": "console-steal",
                                                           "Key": "page.html"})
    page = browser_login(browser, c)
    token = [x["value"] for x in page.context.cookies() if x["name"] == "tessera_console"][0]
    evil = page.context.new_page()
    evil.goto(link)
    evil.wait_for_function("window.answer !== undefined", timeout=WAIT_MS)
    answer = evil.evaluate("window.answer")
    assert answer.startswith("403 ") and "<Code>SignatureDoesNotMatch</Code>" in answer
    assert token not in answer
    assert "cookie:(withheld)" in answer
    page.context.close()


def test_browser_a_rebound_name_cannot_read_the_admin_listener(console_cluster: LocalCluster,
                                                              browser: Browser) -> None:
    """DNS rebinding, in Chromium: a page's name now resolves to 127.0.0.1 (the resolver
    rule stands for the attacker's DNS answer changing), so a script of that origin reaches
    the admin listener same-origin. It read /metrics (tenant names and traffic) and /health
    (the node list); the Host allowlist refuses its requests 421 now."""
    port = console_cluster.admin_port
    rebound = browser.browser_type.launch(
        executable_path=CHROMIUM, headless=True,
        args=["--host-resolver-rules=MAP rebind.attacker.example 127.0.0.1"])
    try:
        page = rebound.new_context(bypass_csp=True).new_page()  # the attacker's page's own
        # CSP, not the listener's answer, decides what its script may fetch
        page.goto(f"http://rebind.attacker.example:{port}/console/")
        got = page.evaluate("""async () => {
            const out = {};
            for (const p of ["/metrics", "/health", "/console/api/session", "/console/"]) {
                const r = await fetch(p);
                out[p] = [r.status, await r.text()];
            }
            return out;
        }""")
    finally:
        rebound.close()
    for path, (status, text) in got.items():
        assert status == 421 and "HostNotAllowed" in text, (path, status, text[:200])
        assert "tessera_" not in text and "zone" not in text
    page = browser_login(browser, console_cluster)  # by address: the console still works
    expect(page.locator("#app")).to_be_visible(timeout=WAIT_MS)
    page.context.close()


@contextlib.contextmanager
def hostile_page(html: str) -> Iterator[str]:
    """Serve `html` at the URL yielded, from this process on a port of 127.0.0.1 of its own:
    another origin than the console, but the same site (as the S3 port is)."""
    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            body = html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port(["127.0.0.1"])), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_browser_a_same_site_page_cannot_act_with_the_session(console_cluster: LocalCluster,
                                                              browser: Browser) -> None:
    """A page on another port of the console's host is the same site, so the browser sends
    it the SameSite=Strict cookie: its reads ran as the logged-in admin (audited "ok" via the
    console; only CORS kept the answer from the page). Fetch Metadata refuses them now."""
    page = browser_login(browser, console_cluster)
    probe = "probe" + uuid.uuid4().hex[:8]
    html = f"""<script>
      fetch("{base(console_cluster)}/admin/v1/tenants/{probe}",
            {{credentials: "include", mode: "no-cors"}})
        .then(() => fetch("{base(console_cluster)}/console/api/session",
                          {{credentials: "include", mode: "no-cors"}}))
        .finally(() => {{ window.done = true; }});
    </script>"""
    with hostile_page(html) as url:
        evil = page.context.new_page()
        evil.goto(url)
        evil.wait_for_function("window.done === true", timeout=WAIT_MS)
    results = [e["result"] for e in audit(console_cluster)
               if e["action"] == "tenant.show" and e.get("name") == probe]
    assert results == ["denied:CrossOrigin"]  # was ["error:NoSuchTenant"]: it ran
    page.reload()  # the console's own page still works with the same session
    expect(page.locator("#app")).to_be_visible(timeout=WAIT_MS)
    page.click("#tabs button[data-tab=tenants]")
    expect(page.locator(".tenant").first).to_be_visible(timeout=WAIT_MS)
    page.context.close()


def test_browser_cluster_map_shows_a_killed_node(console_cluster: LocalCluster,
                                                 browser: Browser) -> None:
    page = browser_login(browser, console_cluster)
    expect(page.locator("#zones .zone")).to_have_count(3, timeout=WAIT_MS)
    expect(page.locator("#zones .node")).to_have_count(15, timeout=WAIT_MS)
    for zone in ("az1", "az2", "az3"):
        expect(page.locator(f".zone[data-zone={zone}] .node")).to_have_count(5)
    victim = page.locator(".zone[data-zone=az2] .node").first.get_attribute("data-node")
    assert victim
    card = page.locator(f".node[data-node={victim}]")
    expect(card).to_have_attribute("data-state", "up", timeout=WAIT_MS)
    expect(card).to_contain_text("0 quarantined", timeout=WAIT_MS)  # the node's own count
    console_cluster.kill(victim)  # SIGKILL by the PID `tessera up` recorded
    expect(card).to_have_attribute("data-state", "down", timeout=WAIT_MS)
    expect(card).to_contain_text("down")
    err = card.locator(".error")  # the readable reason, not `node ID: ...` as the probe had it
    expect(err).to_be_visible()
    assert err.inner_text().strip() and not err.inner_text().startswith(f"node {victim}:")
    expect(page.locator(".node[data-state=up]")).to_have_count(14)
    page.click("#tabs button[data-tab=durability]")
    expect(page.locator("#zone-loss tr")).to_have_count(4, timeout=WAIT_MS)  # header + 3 zones
    page.context.close()


def test_browser_node_card_says_why_in_words_and_counts_in_the_right_number(
        console_cluster: LocalCluster, browser: Browser) -> None:
    """A node refused on its clock: the card showed the probe's raw text with the node's JSON
    inside, and "scrub: 1 passes" (newuser17). The card is built by the page's own nodeCard
    from a status entry as the gateway sends it."""
    page = browser_login(browser, console_cluster)
    expect(page.locator("#zones .node")).to_have_count(15, timeout=WAIT_MS)
    raw = 'node n9: health 401 {"error": "unauthorized", "message": "request outside the replay window"}'
    entry = {"id": "n9", "zone": "az1", "address": "127.0.0.1:1", "state": "down",
             "membership": "active", "used_bytes": 0, "free_bytes": 1 << 30, "shards": 1,
             "scrub": {"passes": 1, "shards_verified": 1, "corrupt_found": 0, "quarantined": 0},
             "last_error": raw, "reason": node_reason("n9", raw)}
    lines = page.evaluate("(n) => [...nodeCard(n).children].map((e) => e.textContent)", entry)
    text = "\n".join(lines)
    assert "1 shard" in lines and "scrub: 1 pass, 1 verified" in text, lines
    assert '{"error"' not in text and "node n9:" not in text, text
    assert "request outside the replay window" in text and "NTP" in text, text
    # what its shards take on disk (packs keep deleted records until compaction), beside
    # "used" (live shards); an older gateway's entry has no disk_bytes: "used" stands in
    packed = {**entry, "used_bytes": 1 << 20, "disk_bytes": 3 << 20}
    lines = page.evaluate("(n) => [...nodeCard(n).children].map((e) => e.textContent)", packed)
    assert "1.0 MiB used, 1.0 GiB free" in lines and "3.0 MiB on disk" in lines, lines
    lines = page.evaluate("(n) => [...nodeCard(n).children].map((e) => e.textContent)",
                          {**packed, "disk_bytes": None})
    assert "1.0 MiB on disk" in lines, lines
    page.context.close()
