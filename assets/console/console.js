// The admin console: reads the admin plane's JSON routes with the credential typed in, kept in this
// tab's sessionStorage only. Every value is put into the page as text (never as HTML), every list
// is paged by the server, and the page polls: views and the instance every 5 s, the chart every 30 s.
"use strict";

const STORAGE_KEY = "prospect-api.admin-credential";
const PAGE_SIZE = 20;
const POLL_MS = 5000;
const TIMELINE_POLL_MS = 30000;
const SERIES = ["series-0", "series-1", "series-2"];

const $ = (selector) => document.querySelector(selector);
let credential = null;
let timers = [];

// ---- talking to the API -------------------------------------------------------------------------

class Refused extends Error {}

async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${credential}`, Accept: "application/json" };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method: options.method || "GET",
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
    cache: "no-store",
    credentials: "omit",
  });
  if (response.status === 204) return null;
  const body = await response.json().catch(() => null);
  if (response.status === 401 || response.status === 403) {
    throw new Refused(problemText(body, response.status));
  }
  if (!response.ok) throw new Error(problemText(body, response.status));
  return body;
}

function problemText(problem, status) {
  if (!problem) return `HTTP ${status}`;
  const named = (problem.invalid_params || []).map((p) => `${p.name}: ${p.reason}`).join("; ");
  return named || problem.detail || problem.title || `HTTP ${status}`;
}

function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") search.set(name, value);
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

// ---- formatting ---------------------------------------------------------------------------------

function formatCount(n) {
  return n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US");
}

function formatBytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

function formatSeconds(s) {
  if (s === null || s === undefined) return "–";
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 90) return `${s.toFixed(1)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}

function formatMs(ms) {
  return ms === null || ms === undefined ? "–" : formatSeconds(ms / 1000);
}

function formatTime(iso) {
  if (!iso) return "–";
  return new Date(iso).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function button(label, className, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.className = className;
  b.addEventListener("click", onClick);
  return b;
}

function reportError(error) {
  if (error instanceof Refused) {
    signOut(error.message);
    return;
  }
  $("#refresh-progress").textContent = `Error: ${error.message}`;
}

// ---- signing in and out -------------------------------------------------------------------------

async function signIn(candidate) {
  credential = candidate;
  let instance;
  try {
    instance = await api("/admin/instance");
  } catch (error) {
    credential = null;
    sessionStorage.removeItem(STORAGE_KEY);
    $("#login-error").textContent =
      error instanceof Refused ? error.message : `Could not sign in: ${error.message}`;
    return;
  }
  sessionStorage.setItem(STORAGE_KEY, candidate);
  $("#login-error").textContent = "";
  $("#token").value = "";
  $("#login").hidden = true;
  $("#console").hidden = false;
  $("#session").hidden = false;
  $("#who").textContent = instance.role;
  fillRoles(instance.roles);
  showInstance(instance);
  await Promise.all([loadViews(), loadTimeline(), refreshLog.load(), loadKeys(), auditLog.load()]).catch(reportError);
  timers.push(setInterval(() => Promise.all([loadViews(), loadInstance()]).catch(reportError), POLL_MS));
  timers.push(setInterval(() => loadTimeline().catch(reportError), TIMELINE_POLL_MS));
  timers.push(setInterval(tickAges, 1000));
}

function signOut(message) {
  credential = null;
  sessionStorage.removeItem(STORAGE_KEY);
  timers.forEach(clearInterval);
  timers = [];
  $("#console").hidden = true;
  $("#session").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = message || "";
}

// ---- the read models ----------------------------------------------------------------------------

let views = [];
let viewsReadAt = 0;

async function loadViews() {
  views = await api("/admin/views");
  viewsReadAt = Date.now();
  const body = $("#views tbody");
  body.replaceChildren();
  for (const view of views) {
    const row = document.createElement("tr");
    row.dataset.view = view.view;
    cell(row, view.view);
    cell(row, view.mode || "–", "mode");
    cell(row, view.populated ? formatCount(view.row_count) : "not populated", "rows");
    cell(row, formatBytes(view.total_bytes), "size");
    const age = cell(row, "", "age");
    age.dataset.seconds = view.data_age_seconds === null ? "" : String(view.data_age_seconds);
    const last = view.last_refresh;
    cell(row, last ? `${formatTime(last.started_at)} (${last.method || "refresh"}, ${last.trigger})` : "never", "last");
    cell(row, last ? formatMs(last.duration_ms) : "–", "duration");
    cell(row, describeWork(view.work), "work");
    const error = view.last_error;
    cell(row, error ? `${formatTime(error.occurred_at)}: ${error.message}` : "", "error");
    const actions = document.createElement("td");
    const refresh = button(view.refreshing ? "Refreshing…" : "Refresh", "refresh", () => refreshViews([view.view]));
    refresh.disabled = view.refreshing;
    actions.appendChild(refresh);
    row.appendChild(actions);
    body.appendChild(row);
  }
  tickAges();
}

// A build beside or a repair under way (any instance): "repair: comparing with its definition,
// 40,000 of 100,000 companies (40%), 12 ranges, 3 rows changed".
function describeWork(work) {
  if (!work) return "";
  const parts = [`${work.kind}: ${work.phase}`];
  if (work.total) {
    parts.push(`${formatCount(work.done)} of ${formatCount(work.total)} ${work.unit || ""} (${Math.floor((100 * work.done) / work.total)}%)`);
  }
  if (work.chunks !== null && work.chunks !== undefined) parts.push(`${formatCount(work.chunks)} ranges`);
  if (work.rows !== null && work.rows !== undefined) parts.push(`${formatCount(work.rows)} rows changed`);
  return parts.join(", ");
}

function tickAges() {
  const elapsed = (Date.now() - viewsReadAt) / 1000;
  for (const td of document.querySelectorAll("#views td.age")) {
    const read = td.dataset.seconds;
    td.textContent = read === "" ? "–" : formatSeconds(Number(read) + elapsed);
  }
}

// What "done" means for a view: a newer success or a newer error than before the request.
function outcomeMark(view) {
  return `${view.last_refresh ? view.last_refresh.started_at : ""}|${view.last_error ? view.last_error.occurred_at : ""}`;
}

async function refreshViews(names) {
  const progress = $("#refresh-progress");
  if (names.length === 0) {
    progress.textContent = "The views are not loaded yet: try again in a moment.";
    return;
  }
  const before = new Map(views.map((v) => [v.view, outcomeMark(v)]));
  const buttons = document.querySelectorAll("button.refresh, #refresh-all");
  buttons.forEach((b) => { b.disabled = true; });
  const started = Date.now();
  try {
    await api("/admin/refresh?wait=false", { method: "POST", body: { views: names } });
    const pending = new Set(names);
    while (pending.size > 0) {
      progress.textContent = `Refreshing ${[...pending].join(", ")}… ${formatSeconds((Date.now() - started) / 1000)}`;
      await new Promise((resolve) => setTimeout(resolve, 1000));
      await loadViews();
      for (const view of views) {
        if (pending.has(view.view) && !view.refreshing && outcomeMark(view) !== before.get(view.view)) {
          pending.delete(view.view);
        }
      }
      if (Date.now() - started > 30 * 60 * 1000) throw new Error("no outcome after 30 minutes");
    }
    const failed = views.filter((v) => names.includes(v.view) && v.last_error &&
      outcomeMark(v).split("|")[1] !== (before.get(v.view) || "").split("|")[1]);
    progress.textContent = failed.length
      ? `Done, with failures: ${failed.map((v) => `${v.view}: ${v.last_error.message}`).join("; ")}`
      : `Done: ${names.join(", ")} refreshed in ${formatSeconds((Date.now() - started) / 1000)}`;
    await Promise.all([refreshLog.load(), loadTimeline()]);
  } catch (error) {
    reportError(error);
  } finally {
    document.querySelectorAll("button.refresh, #refresh-all").forEach((b) => { b.disabled = false; });
  }
}

// ---- this instance ------------------------------------------------------------------------------

async function loadInstance() {
  showInstance(await api("/admin/instance"));
}

function showInstance(instance) {
  const cache = instance.response_cache;
  $("#cache").textContent = !cache.enabled
    ? "off (RESPONSE_CACHE_BYTES=0)"
    : `hit ratio ${cache.hit_ratio === null ? "–" : cache.hit_ratio.toFixed(3)} ` +
      `(${formatCount(cache.hits)} hits, ${formatCount(cache.misses)} misses, ${formatCount(cache.coalesced)} coalesced; ` +
      `${formatCount(cache.entries)} entries, ${formatBytes(cache.bytes)})`;
  const reads = instance.reads;
  const replica = reads.replica;
  let text = reads.serving || "nowhere: the replica is unusable and falling back is off";
  if (replica) {
    const lag = replica.lag_seconds === null ? "unknown" : formatSeconds(replica.lag_seconds);
    text += ` · replica ${replica.reachable ? "up" : "down"}, lag ${lag} (bound ${formatSeconds(replica.max_lag_seconds)})`;
    if (replica.problem) text += `: ${replica.problem}`;
  }
  $("#reads").textContent = text;
}

// ---- the chart ----------------------------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";

function svgElement(name, attributes) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  return element;
}

async function loadTimeline() {
  const timeline = await api("/admin/refresh/timeline?hours=24");
  const container = $("#timeline");
  const svg = svgElement("svg", { viewBox: "0 0 1000 380", role: "img", "aria-label": "Refresh durations and data age, last 24 hours" });
  let points = 0;
  points += drawPanel(svg, timeline, 10, "Refresh / apply duration (max per bucket)", (b) => b.max_duration_ms, formatMs, "duration");
  points += drawPanel(svg, timeline, 200, "Data age (highest per bucket)", (b) => b.max_data_age_seconds, formatSeconds, "age");
  container.replaceChildren(svg);
  container.dataset.points = String(points);
  const legend = $("#timeline-legend");
  legend.replaceChildren();
  timeline.views.forEach((view, i) => {
    const item = document.createElement("span");
    const swatch = document.createElement("span");
    swatch.className = `swatch ${SERIES[i % SERIES.length]}`;
    item.append(swatch, view.view);
    legend.appendChild(item);
  });
  const failed = document.createElement("span");
  failed.textContent = "● failures";
  failed.className = "error";
  legend.appendChild(failed);
}

// One panel of the chart at `top`: a line per view through the buckets that have a value; the
// number of points drawn.
function drawPanel(svg, timeline, top, title, value, format, kind) {
  const left = 70;
  const width = 910;
  const height = 140;
  const values = timeline.views.flatMap((v) => v.buckets.map(value)).filter((x) => x !== null);
  const max = Math.max(1e-9, ...values);
  const bucketCount = Math.max(1, ...timeline.views.map((v) => v.buckets.length));
  const x = (i) => left + (width * (i + 0.5)) / bucketCount;
  const y = (v) => top + 20 + height - (height * v) / max;
  svg.appendChild(svgElement("text", { x: left, y: top + 12 })).textContent = title;
  svg.appendChild(svgElement("line", { x1: left, y1: top + 20 + height, x2: left + width, y2: top + 20 + height, class: "axis" }));
  svg.appendChild(svgElement("line", { x1: left, y1: top + 20, x2: left, y2: top + 20 + height, class: "axis" }));
  svg.appendChild(svgElement("text", { x: 4, y: top + 30 })).textContent = values.length ? format(max) : "";
  svg.appendChild(svgElement("text", { x: 4, y: top + 20 + height })).textContent = "0";
  svg.appendChild(svgElement("text", { x: left, y: top + 36 + height })).textContent = formatTime(timeline.since);
  svg.appendChild(svgElement("text", { x: left + width - 140, y: top + 36 + height })).textContent = formatTime(timeline.until);
  let points = 0;
  timeline.views.forEach((view, i) => {
    let d = "";
    let pen = "M";
    view.buckets.forEach((bucket, b) => {
      const v = value(bucket);
      if (v === null) {
        pen = "M";
        return;
      }
      d += `${pen}${x(b).toFixed(1)},${y(v).toFixed(1)} `;
      pen = "L";
      points += 1;
      // A dot per point, so that a bucket alone between gaps shows too.
      const dot = svgElement("circle", { cx: x(b).toFixed(1), cy: y(v).toFixed(1), r: 2, class: `point ${SERIES[i % SERIES.length]}` });
      dot.dataset.view = view.view;
      svg.appendChild(dot);
      if (kind === "duration" && bucket.failures > 0) {
        svg.appendChild(svgElement("circle", { cx: x(b).toFixed(1), cy: top + 14 + height, r: 3, class: "failure" }));
      }
    });
    if (d) {
      const path = svgElement("path", { d: d.trim(), class: `${kind} ${SERIES[i % SERIES.length]}` });
      path.dataset.view = view.view;
      svg.appendChild(path);
    }
  });
  return points;
}

// ---- server-side paged tables -------------------------------------------------------------------

// A table paged by `before` (the last id of the page): the ids that started each page seen so far
// are kept for "Newer", nothing else.
class PagedTable {
  constructor(name, path, filters, render) {
    this.name = name;
    this.path = path;
    this.filters = filters;
    this.render = render;
    this.starts = [null];
    $(`#${name}-older`).addEventListener("click", () => this.older().catch(reportError));
    $(`#${name}-newer`).addEventListener("click", () => this.newer().catch(reportError));
  }

  async load() {
    this.starts = [null];
    await this.show();
  }

  async older() {
    if (this.lastId === undefined) return;
    this.starts.push(this.lastId);
    await this.show();
  }

  async newer() {
    if (this.starts.length > 1) this.starts.pop();
    await this.show();
  }

  async show() {
    const before = this.starts[this.starts.length - 1];
    const rows = await api(this.path + query({ ...this.filters(), limit: PAGE_SIZE, before }));
    const body = $(`#${this.name} tbody`);
    body.replaceChildren(...rows.map((entry) => {
      const row = document.createElement("tr");
      row.dataset.id = String(entry.id);
      this.render(row, entry);
      return row;
    }));
    this.lastId = rows.length ? rows[rows.length - 1].id : undefined;
    $(`#${this.name}-older`).disabled = rows.length < PAGE_SIZE;
    $(`#${this.name}-newer`).disabled = this.starts.length <= 1;
  }
}

const refreshLog = new PagedTable("history", "/admin/refresh/history", () => ({}), (row, entry) => {
  cell(row, entry.id, "num");
  cell(row, entry.view);
  cell(row, formatTime(entry.started_at));
  cell(row, entry.trigger);
  cell(row, entry.method || "");
  cell(row, entry.status, `status-${entry.status}`);
  cell(row, formatMs(entry.duration_ms), "duration");
  cell(row, formatCount(entry.row_count), "num");
  cell(row, entry.rows_changed === null ? "" : formatCount(entry.rows_changed), "num");
  cell(row, entry.error_message || "", "error");
});

const auditLog = new PagedTable(
  "audit",
  "/admin/audit",
  () => ({ credential: $("#audit-credential").value.trim(), day: $("#audit-day").value }),
  (row, entry) => {
    cell(row, entry.id, "num");
    cell(row, formatTime(entry.at));
    cell(row, entry.credential, "credential");
    cell(row, entry.role);
    cell(row, entry.action, "action");
    cell(row, entry.endpoint, "endpoint");
    cell(row, entry.rows === null ? "" : formatCount(entry.rows), "num");
    cell(row, entry.outcome, "outcome");
    cell(row, entry.detail || "");
  },
);

// ---- API keys -----------------------------------------------------------------------------------

function fillRoles(roles) {
  const select = $("#key-role");
  select.replaceChildren(...roles.map((role) => {
    const option = document.createElement("option");
    option.value = role;
    option.textContent = role;
    return option;
  }));
  const usable = roles.length > 0;
  $("#key-create").disabled = !usable;
  $("#key-message").textContent = usable ? "" : "Keys take their role from ACCESS_POLICY, and this server has none.";
}

async function loadKeys() {
  const keys = await api("/admin/keys");
  $("#keys tbody").replaceChildren(...keys.map((key) => {
    const row = document.createElement("tr");
    row.dataset.key = key.name;
    if (key.revoked_at) row.className = "revoked";
    cell(row, key.name);
    cell(row, key.role);
    cell(row, formatTime(key.created_at));
    cell(row, key.expires_at ? formatTime(key.expires_at) : "never");
    cell(row, key.last_used_at ? formatTime(key.last_used_at) : "never");
    cell(row, key.revoked_at ? formatTime(key.revoked_at) : "");
    const actions = document.createElement("td");
    const revoke = button("Revoke", "revoke", () => revokeKey(key.name));
    revoke.disabled = Boolean(key.revoked_at);
    actions.appendChild(revoke);
    row.appendChild(actions);
    return row;
  }));
}

async function createKey(event) {
  event.preventDefault();
  const days = $("#key-expires").value;
  const body = { name: $("#key-name").value.trim(), role: $("#key-role").value };
  if (days) body.valid_days = Number(days);
  try {
    const created = await api("/admin/keys", { method: "POST", body });
    $("#key-secret").textContent = created.key;
    $("#key-created").hidden = false;
    $("#key-message").textContent = "";
    $("#key-form").reset();
    await Promise.all([loadKeys(), auditLog.load()]);
  } catch (error) {
    if (error instanceof Refused) return reportError(error);
    $("#key-message").textContent = error.message;
  }
}

async function revokeKey(name) {
  if (!confirm(`Revoke the key '${name}'? Every instance refuses it within a second.`)) return;
  try {
    await api(`/admin/keys/${encodeURIComponent(name)}`, { method: "DELETE" });
    $("#key-created").hidden = true;
    $("#key-secret").textContent = "";
    await Promise.all([loadKeys(), auditLog.load()]);
  } catch (error) {
    if (error instanceof Refused) return reportError(error);
    $("#key-message").textContent = error.message;
  }
}

// ---- wiring -------------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("#login").addEventListener("submit", (event) => {
    event.preventDefault();
    signIn($("#token").value.trim());
  });
  $("#sign-out").addEventListener("click", () => signOut(""));
  $("#refresh-all").addEventListener("click", () => refreshViews(views.map((v) => v.view)));
  $("#key-form").addEventListener("submit", createKey);
  $("#audit-form").addEventListener("submit", (event) => {
    event.preventDefault();
    auditLog.load().catch(reportError);
  });
  const saved = sessionStorage.getItem(STORAGE_KEY);
  if (saved) signIn(saved);
});
