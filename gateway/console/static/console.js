// Tessera web console: plain JavaScript, no build step, no dependencies.
// Every change goes through the admin API (/admin/v1/...) with the session cookie and the
// session's CSRF token; the page never stores a secret (the cookie is HttpOnly).
"use strict";

const STATUS_POLL_MS = 3000;
const SERIES_POLL_MS = 10000;
let csrf = null;
let csrfHeader = "X-CSRF-Token";
let statusTimer = null;
let seriesTimer = null;
let lastStatus = null;

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else if (k === "onclick") e.addEventListener("click", v);
    else e[k] = v;
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

// "1 pass", "2 passes": a count with its noun in the right number.
function count(n, one, many) {
  return `${n} ${n === 1 ? one : many}`;
}

function human(n) {
  if (n === null || n === undefined) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + units[i];
}

function when(ts) {
  return ts ? new Date(ts * 1000).toLocaleString() : "-";
}

function flash(msg, isError) {
  const f = $("#flash");
  f.textContent = msg || "";
  f.className = isError ? "error" : "";
}

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function api(method, path, body) {
  const headers = {};
  if (method !== "GET") headers[csrfHeader] = csrf || "";
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, {method, headers, credentials: "same-origin",
                               body: body === undefined ? undefined : JSON.stringify(body)});
  let doc = null;
  try { doc = await r.json(); } catch (e) { doc = null; }
  if (!r.ok) {
    const err = (doc && doc.error) || {code: "HTTP" + r.status, message: r.statusText};
    if (r.status === 403 && err.code === "InvalidSession") showLogin("Your session ended; log in again.");
    throw new ApiError(r.status, err.code, err.message);
  }
  return doc;
}

const admin = (method, path, body) => api(method, "/admin/v1" + path, body);

function table(target, columns, rows, empty) {
  const t = typeof target === "string" ? $(target) : target;
  t.replaceChildren();
  t.append(el("tr", {}, ...columns.map(([, title]) => el("th", {}, title))));
  for (const row of rows) {
    const tr = el("tr", {});
    for (const [key] of columns) {
      const v = typeof key === "function" ? key(row) : row[key];
      tr.append(el("td", {}, v instanceof Node ? v : (v === null || v === undefined ? "-" : v)));
    }
    t.append(tr);
  }
  if (!rows.length) t.append(el("tr", {}, el("td", {colSpan: columns.length}, empty || "none")));
  return t;
}

function dl(target, pairs) {
  const d = $(target);
  d.replaceChildren();
  for (const [k, v] of pairs) d.append(el("dt", {}, k), el("dd", {}, v));
}

// --- login and session -----------------------------------------------------------------------

function showLogin(message) {
  csrf = null;
  clearInterval(statusTimer);
  clearInterval(seriesTimer);
  $("#app").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = message || "";
}

function startApp(doc) {
  csrf = doc.csrf;
  csrfHeader = doc.csrf_header || csrfHeader;
  $("#who").textContent = doc.who;
  $("#login").hidden = true;
  $("#app").hidden = false;
  refreshStatus();
  clearInterval(statusTimer);
  statusTimer = setInterval(refreshStatus, STATUS_POLL_MS);
  const active = document.querySelector("#tabs button.active");
  showTab(active ? active.dataset.tab : "cluster");
}

async function login(ev) {
  ev.preventDefault();
  $("#login-error").textContent = "";
  try {
    const doc = await api("POST", "/console/api/login",
                          {access_key: $("#login-key").value, secret_key: $("#login-secret").value});
    $("#login-secret").value = "";
    startApp(doc);
  } catch (e) {
    $("#login-error").textContent = e.message;
  }
}

async function logout() {
  try { await api("POST", "/console/api/logout"); } catch (e) { /* ended anyway */ }
  showLogin("Logged out.");
}

// --- tabs ------------------------------------------------------------------------------------

const loaders = {
  tenants: loadTenants, buckets: loadBuckets, volumes: loadVolumes, queues: loadQueues,
  audit: loadAudit, charts: loadSeries,
};

function showTab(name) {
  for (const b of document.querySelectorAll("#tabs button")) {
    b.classList.toggle("active", b.dataset.tab === name);
  }
  for (const s of document.querySelectorAll("section.tab")) s.hidden = s.id !== "tab-" + name;
  clearInterval(seriesTimer);
  if (name === "charts") seriesTimer = setInterval(loadSeries, SERIES_POLL_MS);
  if (loaders[name]) loaders[name]().catch((e) => flash(e.message, true));
}

// --- cluster map and durability (one status document, polled) -------------------------------

async function refreshStatus() {
  let doc;
  try { doc = await admin("GET", "/status"); } catch (e) {
    if (e.code !== "InvalidSession") flash("status: " + e.message, true);
    return;
  }
  lastStatus = doc;
  renderCluster(doc);
  renderDurability(doc);
}

function nodeCard(n) {
  const total = n.used_bytes + n.free_bytes;
  const pct = total ? Math.round(100 * n.used_bytes / total) : 0;
  const sc = n.scrub || {};
  const scrub = Object.keys(sc).length
    ? `scrub: ${count(sc.passes || 0, "pass", "passes")}, ${sc.shards_verified || 0} verified, ` +
      `${sc.corrupt_found || 0} corrupt found; ${sc.quarantined ?? "?"} quarantined`
    : "scrub: no report";
  const bar = el("div", {class: "bar"}, el("span", {}));
  bar.firstChild.style.width = pct + "%";
  return el("div", {class: "node", "data-node": n.id, "data-state": n.state,
                    "data-membership": n.membership},
    el("span", {class: "state"}, n.state, n.membership !== "active" ? " / " + n.membership : ""),
    el("div", {class: "id"}, n.id),
    el("div", {class: "figures mono"}, n.address),
    bar,
    el("div", {class: "figures"}, `${human(n.used_bytes)} used, ${human(n.free_bytes)} free`),
    el("div", {class: "figures"}, `${human(n.disk_bytes ?? n.used_bytes)} on disk`),
    el("div", {class: "figures"}, count(n.shards, "shard", "shards")),
    el("div", {class: "figures"}, scrub),
    n.last_error ? el("div", {class: "figures error"}, n.reason || n.last_error) : null);
}

function renderCluster(doc) {
  const zones = $("#zones");
  zones.replaceChildren();
  for (const z of doc.zones) {
    const col = el("div", {class: "zone", "data-zone": z.zone},
      el("h3", {}, z.zone, " ", el("small", {}, `${z.up}/${z.nodes} up, ${human(z.used_bytes)} used`)));
    for (const n of doc.nodes.filter((x) => x.zone === z.zone)) col.append(nodeCard(n));
    zones.append(col);
  }
  $("#cluster-updated").textContent = "updated " + new Date(doc.time * 1000).toLocaleTimeString();
}

function renderDurability(doc) {
  const width = doc.profile.k + doc.profile.m;
  const st = doc.stripes;
  table("#stripes", [["healthy", "healthy shards"], ["count", "stripes"]],
        Object.entries(st.by_healthy_shards).map(([h, c]) => ({healthy: `${h}/${width}`, count: c})),
        "no stripes yet");
  $("#stripes-note").textContent = `profile ${doc.profile.name} (k=${doc.profile.k}, m=${doc.profile.m}); ` +
    `${st.scanned}${st.truncated ? "+" : ""} stripes scanned; ${st.zone_unsafe} zone-unsafe`;
  const d = doc.durability;
  const pairs = [["every object", `~${d.object_nines} nines (loss ${Number(d.object_loss_per_year).toExponential(2)}/yr)`],
                 ["erasure-coded shards", `~${d.nines} nines`]];
  if (d.metadata) pairs.push(["metadata store", `~${d.metadata.nines} nines (${d.metadata.backend})`]);
  pairs.push(["inputs", `node AFR ${Math.round(100 * d.inputs.node_afr)}%, MTTR ${d.inputs.mttr_hours} h, ` +
                        `${d.inputs.nodes} nodes in ${d.inputs.zones} zones`]);
  dl("#estimate", pairs);
  const r = doc.repair, rb = doc.rebalance || {};
  const left = Object.values(rb.draining || {}).reduce((a, x) => a + ((x && x.left) || 0), 0);
  dl("#backlogs", [
    ["repair backlog", `${r.backlog}${r.backlog_truncated ? "+" : ""} stripes`],
    ["repaired", `${r.stripes_repaired || 0} stripes, ${r.shards_rebuilt || 0} shards (${human(r.bytes_rebuilt || 0)})`],
    ["repair rate", repairRate(doc)],
    ["unrepairable now", r.unrepairable || 0],
    ["rebalance", `${rb.state || "idle"}, ${left} shards to move off draining nodes`],
    ["moved", `${rb.shards_moved || 0} shards (${human(rb.bytes_moved || 0)})`],
    ["GC backlog", `${doc.gc.backlog}${doc.gc.backlog_truncated ? "+" : ""}`],
  ]);
  const loss = st.zone_loss;
  if (loss) {
    table("#zone-loss", [["zone", "zone lost"], ["redundant", "still redundant"],
                         ["no_margin", "readable, no margin left"], ["unreadable", "unreadable"]],
          Object.entries(loss).map(([zone, x]) => ({zone, ...x})));
    $("#zone-loss-note").textContent = "from the same stripe scan, with today's node health";
  } else {
    $("#zone-loss").replaceChildren();
    $("#zone-loss-note").textContent = "not reported by this gateway";
  }
}

let prevRepair = null;
function repairRate(doc) {
  const now = {t: doc.time, bytes: doc.repair.bytes_rebuilt || 0, moved: (doc.rebalance || {}).bytes_moved || 0};
  let out = "measuring...";
  if (prevRepair && now.t > prevRepair.t) {
    const dt = now.t - prevRepair.t;
    out = `repair ${human((now.bytes - prevRepair.bytes) / dt)}/s, rebalance ${human((now.moved - prevRepair.moved) / dt)}/s`;
  }
  prevRepair = now;
  return out;
}

// --- tenants and keys -------------------------------------------------------------------------

async function loadTenants() {
  const [{tenants}, {keys}] = await Promise.all([admin("GET", "/tenants"), admin("GET", "/keys")]);
  const box = $("#tenants");
  box.replaceChildren();
  for (const t of tenants) {
    const mine = keys.filter((k) => k.tenant === t.name && !k.tenant_deleted);
    const keyTable = table(el("table", {class: "keys"}), [
      ["access_key_id", "access key"], ["state", "state"], [(k) => when(k.created), "created"],
      [(k) => k.state === "active" ? twoStep("Revoke", "Confirm revoke", () => revokeKey(k)) : "", ""],
    ], mine, "no access keys");
    const shred = el("form", {class: "inline shred"},
      el("input", {placeholder: `type ${t.name} to shred`, class: "shred-confirm"}),
      el("button", {type: "submit"}, "Shred tenant"));
    shred.addEventListener("submit", (ev) => { ev.preventDefault(); shredTenant(t, shred); });
    box.append(el("div", {class: "tenant", "data-tenant": t.name},
      el("h3", {}, t.name, " ", el("small", {}, `${t.state}, KEK v${t.kek_version ?? "-"}, ` +
         `${t.buckets} buckets${t.rewrap_pending ? ", rewrap pending" : ""}` +
         `${t.shred_due ? ", shred due " + when(t.shred_due) : ""}`)),
      el("div", {class: "actions"},
        el("button", {class: "create-key", onclick: () => createKey(t.name)}, "Create access key"),
        el("button", {class: "rotate", onclick: () => rotate(t.name)}, "Rotate KEK"),
        shred),
      keyTable));
  }
  if (!tenants.length) box.append(el("p", {}, "no tenants"));
}

function twoStep(label, confirmLabel, action) {
  const b = el("button", {class: "two-step"}, label);
  b.addEventListener("click", () => {
    if (b.dataset.armed) { action(); return; }
    b.dataset.armed = "1";
    b.textContent = confirmLabel;
  });
  return b;
}

async function createTenant(ev) {
  ev.preventDefault();
  const name = $("#tenant-name").value.trim();
  const reuse = $("#tenant-reuse").checked;  // the name of a deleted tenant (its grants pass)
  try {
    await admin("POST", "/tenants", reuse ? {name, reuse_name: true} : {name});
    $("#tenant-name").value = "";
    $("#tenant-reuse").checked = false;
    flash(`tenant ${name} created`);
  } catch (e) { flash(e.message, true); }
  await loadTenants();
}

async function createKey(tenant) {
  try {
    const k = await admin("POST", "/keys", {tenant});
    $("#secret-tenant").textContent = tenant;
    $("#secret-ak").textContent = k.access_key_id;
    $("#secret-sk").textContent = k.secret_access_key;
    $("#secret-box").hidden = false;
    flash(`access key ${k.access_key_id} created`);
  } catch (e) { flash(e.message, true); }
  await loadTenants();
}

function hideSecret() {
  $("#secret-sk").textContent = "";
  $("#secret-ak").textContent = "";
  $("#secret-box").hidden = true;
}

async function revokeKey(k) {
  try {
    await admin("DELETE", "/keys/" + encodeURIComponent(k.access_key_id));
    flash(`access key ${k.access_key_id} revoked`);
  } catch (e) { flash(e.message, true); }
  await loadTenants();
}

async function rotate(name) {
  try {
    const r = await admin("POST", `/tenants/${encodeURIComponent(name)}/rotate-key`);
    flash(`tenant ${name}: KEK version ${r.kek_version}; rewrapping data keys in the background`);
  } catch (e) { flash(e.message, true); }
  await loadTenants();
}

async function shredTenant(t, form) {
  const typed = form.querySelector("input").value;
  if (typed !== t.name) { flash(`type the tenant's name (${t.name}) to shred it`, true); return; }
  try {
    const r = await admin("POST", `/tenants/${encodeURIComponent(t.name)}/shred`, {confirm: typed});
    flash(`tenant ${t.name}: shred ${r.state}${r.due ? " (due " + when(r.due) + ")" : ""}`);
  } catch (e) { flash(e.message, true); }
  await loadTenants();
}

// --- buckets, volumes, queues, audit ---------------------------------------------------------

async function loadBuckets() {
  const {buckets} = await admin("GET", "/buckets");
  table("#buckets", [["name", "bucket"], ["tenant", "tenant"], ["versioning", "versioning"],
                     [(b) => b.objects + (b.truncated ? "+" : ""), "objects"],
                     [(b) => human(b.bytes) + (b.truncated ? "+" : ""), "size"],
                     ["lifecycle_rules", "lifecycle rules"], [(b) => when(b.created), "created"]],
        buckets, "no buckets");
}

async function loadVolumes() {
  const {tenants} = await admin("GET", "/tenants");
  const rows = [];
  for (const t of tenants.filter((x) => x.state === "active")) {
    const {volumes} = await admin("GET", `/tenants/${encodeURIComponent(t.name)}/volumes`);
    for (const v of volumes) {
      const d = await admin("GET", `/tenants/${encodeURIComponent(t.name)}/volumes/${encodeURIComponent(v.name)}`);
      rows.push(d);
    }
  }
  table("#volumes", [["tenant", "tenant"], ["name", "volume"], [(v) => human(v.size), "size"],
                     [(v) => human(v.stored_bytes), "stored"],
                     [(v) => v.attached_by ? `${v.attached_by.holder} (until ${when(v.attached_by.expires)})` : "detached", "attached by"],
                     [(v) => v.snapshots.map((s) => s.name).join(", ") || "-", "snapshots"],
                     [(v) => v.base ? `${v.base.name} gen ${v.base.gen}` : "-", "clone of"]],
        rows, "no volumes");
}

async function loadQueues() {
  const q = await admin("GET", "/queues");
  const lc = q.lifecycle || {};
  const st = lastStatus;
  dl("#queue-figures", [
    ["restore jobs pending", q.restores_pending + (q.truncated ? "+" : "")],
    ["restored copies alive", q.restored_copies],
    ["lifecycle passes (this gateway)", lc.passes || 0],
    ["lifecycle actions", Object.entries(lc).filter(([k]) => k !== "passes").map(([k, v]) => `${k} ${v}`).join(", ") || "-"],
    ["lifecycle interval", `${q.lifecycle_interval_s} s`],
    ["repair backlog", st ? st.repair.backlog : "-"],
    ["GC backlog", st ? st.gc.backlog : "-"],
  ]);
  const cols = (w, t) => [["bucket", "bucket"], ["key", "key"], ["version_id", "version"], [(r) => when(r[w]), t]];
  table("#restores", cols("due", "due"), q.restores, "no restore jobs");
  table("#copies", cols("expires", "expires"), q.copies, "no restored copies");
}

let auditAsked = 0;  // the latest audit listing asked for: an older answer arriving later is dropped

async function loadAudit(ev) {
  if (ev) ev.preventDefault();
  const asked = ++auditAsked;
  const params = new URLSearchParams();
  for (const f of ["who", "action", "result", "tenant"]) {
    const v = $("#audit-" + f).value.trim();
    if (v) params.set(f, v);
  }
  params.set("limit", "200");
  const {entries, cut_short: cut} = await admin("GET", "/audit?" + params.toString());
  if (asked !== auditAsked) return;  // the tab's unfiltered load must not replace a filter's rows
  $("#audit-note").textContent = cut && cut.length
    ? `cut short: the read cap of the ${cut.join(" and ")} log was reached; older entries were not read (narrow the filter, or read the files in DATA/audit)`
    : "";
  const detail = (e) => Object.entries(e).filter(([k]) => !["ts", "who", "action", "result", "remote"].includes(k))
    .map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(" ");
  table("#audit", [[(e) => when(e.ts), "when"], ["who", "who"], ["action", "action"],
                   ["result", "result"], [detail, "details"], ["remote", "from"]], entries, "no entries");
}

// --- charts (inline SVG) ----------------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";

// The chart is drawn in about the CSS pixels of its panel (a third of a wide window), so its
// 11-unit text is read at ~10 px; a 600-unit box shrank it to ~6 px (newuser16).
function chart(target, samples, series, fmt) {
  const W = 400, H = 120, P = 30;
  const keys = series.map(([k]) => k);
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const pts = samples.filter((s) => keys.some((k) => s[k] !== null));
  const t1 = Date.now() / 1000, t0 = t1 - 3600;
  const max = Math.max(1e-9, ...pts.flatMap((s) => keys.map((k) => s[k] || 0)));
  const x = (t) => P + (W - P) * Math.max(0, (t - t0)) / 3600;
  const y = (v) => H - 15 - (H - 25) * (v / max);
  keys.forEach((k, i) => {
    const d = pts.filter((s) => s[k] !== null)
      .map((s, j) => `${j ? "L" : "M"}${x(s.t).toFixed(1)},${y(s[k]).toFixed(1)}`).join(" ");
    if (!d) return;
    const path = document.createElementNS(SVG, "path");
    path.setAttribute("d", d);
    path.setAttribute("class", "l" + i);
    path.dataset.series = k;
    svg.append(path);
  });
  for (const [v, label] of [[max, fmt(max)], [0, "0"]]) {
    const t = document.createElementNS(SVG, "text");
    t.setAttribute("x", 2);
    t.setAttribute("y", y(v) + (v ? 8 : 0));
    t.textContent = label;
    svg.append(t);
  }
  const t = document.createElementNS(SVG, "text");
  t.setAttribute("x", W - 70);
  t.setAttribute("y", H - 2);
  t.textContent = `${pts.length} sample${pts.length === 1 ? "" : "s"}`;
  svg.append(t);
  series.forEach(([, label], i) => {
    const legend = document.createElementNS(SVG, "text");
    legend.setAttribute("x", P + 10 + 100 * i);
    legend.setAttribute("y", H - 2);
    legend.setAttribute("class", "t" + i);
    legend.textContent = "\u25A0 " + label;
    svg.append(legend);
  });
  $(target).replaceChildren(svg);
}

async function loadSeries() {
  const {samples} = await admin("GET", "/metrics/series");
  chart("#chart-requests", samples, [["requests_s", "requests/s"], ["errors_s", "errors/s"]],
        (v) => v.toFixed(1));
  chart("#chart-bytes", samples, [["bytes_in_s", "in"], ["bytes_out_s", "out"]],
        (v) => human(v) + "/s");
  chart("#chart-latency", samples, [["latency_mean_ms", "mean"], ["latency_p95_ms", "p95"]],
        (v) => v.toFixed(1) + " ms");
}

// --- wiring -----------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", async () => {
  $("#login-form").addEventListener("submit", login);
  $("#logout").addEventListener("click", logout);
  $("#tenant-form").addEventListener("submit", createTenant);
  $("#secret-done").addEventListener("click", hideSecret);
  $("#audit-form").addEventListener("submit", (ev) => loadAudit(ev).catch((e) => flash(e.message, true)));
  for (const b of document.querySelectorAll("#tabs button")) {
    b.addEventListener("click", () => showTab(b.dataset.tab));
  }
  for (const b of document.querySelectorAll("button.refresh")) {
    b.addEventListener("click", () => loaders[b.dataset.refresh]().catch((e) => flash(e.message, true)));
  }
  try {
    startApp(await api("GET", "/console/api/session"));
  } catch (e) {
    showLogin("");
  }
});
