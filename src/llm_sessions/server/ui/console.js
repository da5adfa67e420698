// The llm-sessions operator console. No build step, no dependencies: plain DOM and SVG.
// The API key lives in sessionStorage (this tab only) and travels in the Authorization
// header of every request, the live stream included (read with fetch, not EventSource,
// which can't send headers): it never appears in a URL.
"use strict";

const KEY_ITEM = "llm-sessions-console-key";
const REASON_COLORS = {
  new: "#60a5fa", pinned: "#94a3b8", upgraded: "#a78bfa", explicit: "#64748b",
  cache_sticky: "#22c55e", escalated: "#ef4444", fallback: "#f59e0b", refused: "#7f1d1d",
  primary_retry: "#0ea5e9", budget_downgrade: "#d946ef", chain_bound: "#14b8a6",
  no_session: "#cbd5e1", store_unavailable: "#111827",
};

const state = {
  key: sessionStorage.getItem(KEY_ITEM) || "",
  info: null,
  all: false,
  view: "sessions",
  rows: new Map(), // row key (tenant + "\n" + id) -> session row
  sort: { field: "last_used_at", desc: true },
  session: null, // { id, tenant } of the session view
  events: [], // the session view's events
  stream: null, // AbortController of the live stream
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  return node;
}

const usd = (micros) => "$" + (micros / 1e6).toFixed(micros && micros < 10000 ? 6 : 4);
const clock = (ms) => (ms ? new Date(ms).toLocaleTimeString() : "");
const rowKey = (tenant, id) => (tenant || "") + "\n" + id;

function ago(ms) {
  if (!ms) return "";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  return Math.round(s / 3600) + " h ago";
}

// -- talking to the gateway ------------------------------------------------------------

class Unauthorized extends Error {}

function headers() {
  return state.key ? { Authorization: "Bearer " + state.key } : {};
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(), cache: "no-store" });
  if (response.status === 401) throw new Unauthorized();
  if (!response.ok) {
    let message = response.statusText;
    try { message = (await response.json()).error.message; } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  return response.json();
}

function scoped(path) {
  return state.all ? path + (path.includes("?") ? "&" : "?") + "all=true" : path;
}

function sessionPath(suffix = "") {
  const { id, tenant } = state.session;
  const query = state.all && tenant != null ? "?tenant=" + encodeURIComponent(tenant) : "";
  return "/v1/sessions/" + encodeURIComponent(id) + suffix + query;
}

// -- sign-in -----------------------------------------------------------------------------

function showLogin(message) {
  stopStream();
  state.key = "";
  sessionStorage.removeItem(KEY_ITEM);
  for (const id of ["sessions-view", "session-view", "overview-view", "tabs", "logout", "live"]) {
    $(id).hidden = true;
  }
  $("login").hidden = false;
  $("login-error").hidden = !message;
  $("login-error").textContent = message || "";
  $("key").value = "";
  $("key").focus();
}

async function signIn(key) {
  state.key = key;
  try {
    state.info = await api("/v1/console/info");
  } catch (error) {
    showLogin(error instanceof Unauthorized ? "That key was refused: try another one." : String(error.message));
    return;
  }
  if (key) sessionStorage.setItem(KEY_ITEM, key);
  $("login").hidden = true;
  $("tabs").hidden = false;
  $("logout").hidden = false;
  $("open-warning").hidden = !state.info.open;
  $("all-tenants-label").hidden = !state.info.admin;
  state.all = state.info.admin && $("all-tenants").checked;
  $("who").textContent = state.info.admin ? "admin key" : state.info.tenant ? "tenant " + state.info.tenant.slice(0, 8) : "no key";
  route();
  startStream();
}

// -- the live stream ---------------------------------------------------------------------

function stopStream() {
  if (state.stream) state.stream.abort();
  state.stream = null;
  $("live").hidden = true;
}

async function startStream() {
  stopStream();
  const controller = new AbortController();
  state.stream = controller;
  let pause = 500;
  while (!controller.signal.aborted) {
    try {
      const response = await fetch(scoped("/v1/console/stream"), {
        headers: headers(), signal: controller.signal, cache: "no-store",
      });
      if (response.status === 401) { showLogin("That key was refused: try another one."); return; }
      if (!response.ok) throw new Error(response.statusText);
      $("live").hidden = false;
      pause = 500;
      await readEvents(response.body, controller.signal);
    } catch (error) {
      if (controller.signal.aborted) return;
    }
    $("live").hidden = true;
    await new Promise((resolve) => setTimeout(resolve, pause));
    pause = Math.min(pause * 2, 10000);
  }
}

async function readEvents(body, signal) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  while (!signal.aborted) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let kind = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) kind = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
      }
      if (data.length) handle(kind, JSON.parse(data.join("\n")));
    }
  }
}

function handle(kind, data) {
  if (kind === "sessions") replaceRows(data.sessions);
  else if (kind === "overview") renderOverview(data);
  else if (kind === "turn") onTurn(data);
}

// -- the sessions view -------------------------------------------------------------------

function replaceRows(rows) {
  const seen = new Set();
  for (const row of rows) {
    const key = rowKey(row.tenant, row.id);
    seen.add(key);
    state.rows.set(key, row);
  }
  for (const key of [...state.rows.keys()]) if (!seen.has(key)) state.rows.delete(key);
  renderRows();
}

function onTurn({ id, tenant, event }) {
  const key = rowKey(tenant, id);
  const row = state.rows.get(key) || {
    id, tenant, requests: 0, strikes: 0, cost_micros: 0, cache_savings_micros: 0,
    cache_read_share: null, cap_micros: state.info.cap_micros,
  };
  if (event.outcome !== "refused") {
    row.requests += 1;
    if (event.outcome === "served") row.model = event.model;
  }
  row.tier = event.tier;
  row.strikes = event.strikes_after;
  row.cost_micros = event.total_micros;
  row.near_cap = !!row.cap_micros && row.cost_micros >= 0.8 * row.cap_micros;
  row.reason = event.reason;
  row.api = event.api;
  row.agent = event.agent;
  row.source = event.source;
  row.last_used_at = event.at;
  row.cache_savings_micros += event.cache_savings_micros || 0;
  const prompt = (event.input_tokens || 0) + (event.cache_read_tokens || 0) + (event.cache_write_tokens || 0);
  if (prompt) {
    const before = row._prompt || 0;
    const cached = (row._cached || 0) + (event.cache_read_tokens || 0);
    row._prompt = before + prompt;
    row._cached = cached;
    row.cache_read_share = cached / row._prompt;
  }
  state.rows.set(key, row);
  renderRows(key);
  const viewed = state.session;
  if (viewed && viewed.id === id && (viewed.tenant || "") === (tenant || "")) {
    state.events.push(event);
    renderSession();
  }
}

function passes(row) {
  const model = $("filter-model").value;
  const reason = $("filter-reason").value;
  if (model && row.model !== model) return false;
  if (reason && row.reason !== reason) return false;
  if ($("filter-near-cap").checked && !row.near_cap) return false;
  if ($("filter-looping").checked && !(row.strikes > 0 || row.reason === "escalated")) return false;
  return true;
}

function compare(a, b) {
  const { field, desc } = state.sort;
  const x = a[field] ?? "";
  const y = b[field] ?? "";
  const order = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
  return desc ? -order : order;
}

function fillSelect(select, values) {
  const chosen = select.value;
  const have = new Set([...select.options].map((o) => o.value));
  for (const value of [...values].sort()) {
    if (value && !have.has(value)) select.append(el("option", { value, text: value }));
  }
  select.value = chosen;
}

function renderRows(changed) {
  const body = $("sessions").querySelector("tbody");
  const rows = [...state.rows.values()];
  fillSelect($("filter-model"), new Set(rows.map((r) => r.model)));
  fillSelect($("filter-reason"), new Set(rows.map((r) => r.reason)));
  const shown = rows.filter(passes).sort(compare);
  const existing = new Map([...body.rows].map((tr) => [tr.dataset.key, tr]));
  let previous = null;
  for (const row of shown) {
    const key = rowKey(row.tenant, row.id);
    let tr = existing.get(key);
    existing.delete(key);
    if (!tr) {
      tr = el("tr", { "data-key": key, "data-id": row.id });
      tr.addEventListener("click", () => openSession(row.id, row.tenant));
    }
    fillRow(tr, row);
    if (key === changed) { tr.classList.remove("flash"); void tr.offsetWidth; tr.classList.add("flash"); }
    const next = previous ? previous.nextSibling : body.firstChild;
    if (next !== tr) body.insertBefore(tr, next);
    previous = tr;
  }
  for (const tr of existing.values()) tr.remove();
  $("no-sessions").hidden = shown.length > 0;
  $("session-count").textContent = shown.length + " of " + rows.length + " sessions";
  for (const th of $("sessions").querySelectorAll("th")) {
    th.classList.toggle("sorted-asc", th.dataset.sort === state.sort.field && !state.sort.desc);
    th.classList.toggle("sorted-desc", th.dataset.sort === state.sort.field && state.sort.desc);
    if (th.classList.contains("tenant-col")) th.hidden = !state.all;
  }
}

function fillRow(tr, row) {
  const cells = [];
  cells.push(el("td", { class: "id", text: row.id }));
  const tenant = el("td", { class: "tenant-col id", text: (row.tenant || "(no key)").slice(0, 8) });
  tenant.hidden = !state.all;
  cells.push(tenant);
  cells.push(el("td", {}, row.api || "", el("span", { class: "sub", text: [row.source, row.agent].filter(Boolean).join(" · ") })));
  cells.push(el("td", {}, row.model || "", el("span", { class: "sub", text: row.tier || "" })));
  cells.push(el("td", { class: "reason reason-" + (row.reason || ""), text: row.reason || "" }));
  cells.push(el("td", { class: "num requests", text: String(row.requests) }));
  const spend = el("td", { class: "num spend" }, usd(row.cost_micros));
  if (row.cap_micros) {
    const share = Math.min(1, row.cost_micros / row.cap_micros);
    const bar = el("span", { class: "bar" + (row.near_cap ? " near" : ""), title: Math.round(share * 100) + "% of " + usd(row.cap_micros) });
    const fill = el("i");
    fill.style.width = (share * 100).toFixed(1) + "%";
    bar.append(fill);
    spend.append(el("span", { class: "sub", text: "of " + usd(row.cap_micros) }), bar);
  }
  cells.push(spend);
  const share = row.cache_read_share == null ? "" : Math.round(row.cache_read_share * 100) + "%";
  cells.push(el("td", { class: "num" }, share, el("span", { class: "sub", text: row.cache_savings_micros ? usd(row.cache_savings_micros) + " saved" : "" })));
  cells.push(el("td", { class: "num strikes", text: String(row.strikes) }));
  cells.push(el("td", { title: clock(row.last_used_at), text: ago(row.last_used_at) }));
  tr.replaceChildren(...cells);
}

// -- the session view --------------------------------------------------------------------

async function openSession(id, tenant) {
  state.session = { id, tenant: tenant == null ? null : tenant };
  state.events = [];
  location.hash = "#session";
  show("session");
  $("session-id").textContent = id;
  renderSession();
  try {
    const data = await api(sessionPath("/events"));
    state.events = data.events;
  } catch (error) {
    if (error instanceof Unauthorized) return showLogin("That key was refused: try another one.");
    state.events = [];
  }
  renderSession();
}

function renderSession() {
  if (!state.session) return;
  const events = state.events;
  const row = state.rows.get(rowKey(state.session.tenant, state.session.id)) || {};
  const facts = $("session-facts");
  const last = events[events.length - 1] || {};
  const pairs = [
    ["Model", row.model || last.model || ""], ["Tier", row.tier || last.tier || ""],
    ["API / client", [last.api, last.source, last.agent].filter(Boolean).join(" · ")],
    ["Spend", usd(last.total_micros ?? row.cost_micros ?? 0) + (state.info.cap_micros ? " of " + usd(state.info.cap_micros) : "")],
    ["Turns logged", String(events.length)],
  ];
  if (state.all && state.session.tenant != null) pairs.push(["Tenant", state.session.tenant.slice(0, 8) || "(no key)"]);
  facts.replaceChildren(...pairs.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
  const body = $("timeline").querySelector("tbody");
  // the timeline grows at its end: only the rows not shown yet are added
  while (body.rows.length > events.length) body.lastChild.remove();
  for (let i = body.rows.length; i < events.length; i++) body.append(timelineRow(events[i]));
  $("no-events").hidden = events.length > 0;
  drawSpend(events, state.info.cap_micros);
}

function timelineRow(e) {
  const model = el("td", {}, e.model || "");
  if (e.model && e.decided && e.model !== e.decided) model.append(el("span", { class: "badge fallback", text: "fallback from " + e.decided }));
  if (e.translated) model.append(el("span", { class: "badge translated", text: "translated " + e.translated }));
  const tokens = e.outcome === "served" && e.input_tokens != null
    ? `${e.input_tokens} / ${e.output_tokens} / ${e.cache_read_tokens || 0}r ${e.cache_write_tokens || 0}w` : "";
  return el("tr", { class: "turn", "data-reason": e.reason },
    el("td", { text: clock(e.at) }),
    el("td", { text: (e.api || "") + (e.stream ? " (stream)" : "") }),
    model,
    el("td", { text: e.tier || "" }),
    el("td", { class: "reason reason-" + e.reason, text: e.reason }),
    el("td", { class: "num", text: e.status != null ? String(e.status) : e.outcome }),
    el("td", { class: "num", text: tokens }),
    el("td", { class: "num", text: usd(e.cost_micros || 0) }),
    el("td", { class: "num", text: e.latency_ms != null ? Math.round(e.latency_ms) + " ms" : "" }),
    el("td", { class: "num", text: `${e.strikes_before} → ${e.strikes_after}` }),
  );
}

function drawSpend(events, cap) {
  const chart = $("spend-chart");
  chart.replaceChildren();
  const width = 640, height = 160, pad = 28;
  const points = events.filter((e) => e.total_micros != null);
  const top = Math.max(cap || 0, ...points.map((e) => e.total_micros), 1);
  const t0 = points.length ? points[0].at : 0;
  const t1 = points.length ? Math.max(points[points.length - 1].at, t0 + 1) : 1;
  const x = (t) => pad + ((t - t0) / (t1 - t0)) * (width - 2 * pad);
  const y = (v) => height - pad - (v / top) * (height - 2 * pad);
  chart.append(svg("line", { x1: pad, y1: height - pad, x2: width - pad, y2: height - pad, stroke: "#cbd5e1" }));
  if (cap) {
    chart.append(svg("line", { x1: pad, y1: y(cap), x2: width - pad, y2: y(cap), stroke: "#b91c1c", "stroke-dasharray": "4 3", class: "cap-line" }));
    const label = svg("text", { x: width - pad, y: y(cap) - 4, "text-anchor": "end", "font-size": 11, fill: "#b91c1c" });
    label.textContent = "cap " + usd(cap);
    chart.append(label);
  }
  if (!points.length) return;
  const path = points.map((e, i) => (i ? "L" : "M") + x(e.at).toFixed(1) + " " + y(e.total_micros).toFixed(1)).join(" ");
  chart.append(svg("path", { d: path, fill: "none", stroke: "#2563eb", "stroke-width": 2, class: "spend-line" }));
  for (const e of points) {
    chart.append(svg("circle", { cx: x(e.at), cy: y(e.total_micros), r: 3, fill: REASON_COLORS[e.reason] || "#2563eb", class: "spend-point" }));
  }
}

async function deleteSession() {
  if (!state.session) return;
  if (!confirm(`Delete session ${state.session.id}? Its pin, strikes, spend and timeline go with it.`)) return;
  try {
    await api(sessionPath(), { method: "DELETE" });
  } catch (error) {
    if (error instanceof Unauthorized) return showLogin("That key was refused: try another one.");
    alert("Could not delete it: " + error.message);
    return;
  }
  state.rows.delete(rowKey(state.session.tenant, state.session.id));
  state.session = null;
  location.hash = "#sessions";
}

// -- the overview ------------------------------------------------------------------------

function renderOverview(data) {
  const total = data.total;
  $("ov-requests").textContent = String(total.requests);
  $("ov-spend").textContent = usd(total.spend_micros);
  $("ov-savings").textContent = usd(total.savings_micros);
  $("ov-fallbacks").textContent = String(total.fallbacks);
  $("ov-refusals").textContent = String(total.refusals);
  const reasons = Object.keys(total.reasons).sort();
  barChart($("reasons-chart"), data.minutes, reasons.map((r) => [r, (m) => m.reasons[r] || 0]), 160);
  barChart($("spend-minute-chart"), data.minutes, [["spend", (m) => m.spend_micros]], 120);
  $("reasons-legend").replaceChildren(...reasons.flatMap((r) => {
    const swatch = el("i");
    swatch.style.background = REASON_COLORS[r] || "#94a3b8";
    return [swatch, r];
  }));
  const models = Object.entries(total.models).sort((a, b) => b[1] - a[1]);
  const served = models.reduce((n, [, count]) => n + count, 0) || 1;
  $("models").querySelector("tbody").replaceChildren(...models.map(([model, count]) => {
    const bar = el("span", { class: "bar" });
    const fill = el("i");
    fill.style.width = ((count / served) * 100).toFixed(1) + "%";
    bar.append(fill);
    return el("tr", {}, el("td", { text: model }), el("td", { class: "num", text: String(count) }), el("td", {}, bar));
  }));
}

function barChart(chart, minutes, series, height) {
  chart.replaceChildren();
  const width = 640, pad = 20;
  const totals = minutes.map((m) => series.reduce((n, [, get]) => n + get(m), 0));
  const top = Math.max(...totals, 1);
  const step = (width - 2 * pad) / minutes.length;
  minutes.forEach((m, i) => {
    let base = height - pad;
    for (const [name, get] of series) {
      const value = get(m);
      if (!value) continue;
      const h = (value / top) * (height - 2 * pad);
      base -= h;
      const rect = svg("rect", { x: pad + i * step + 1, y: base, width: Math.max(step - 2, 1), height: h, fill: REASON_COLORS[name] || "#2563eb", class: "bar-" + name });
      const title = svg("title");
      title.textContent = `${new Date(m.at).toLocaleTimeString()} ${name}: ${name === "spend" ? usd(value) : value}`;
      rect.append(title);
      chart.append(rect);
    }
  });
  chart.append(svg("line", { x1: pad, y1: height - pad, x2: width - pad, y2: height - pad, stroke: "#cbd5e1" }));
}

async function loadOverview() {
  try { renderOverview(await api(scoped("/v1/console/overview"))); } catch (error) {
    if (error instanceof Unauthorized) showLogin("That key was refused: try another one.");
  }
}

// -- views and wiring --------------------------------------------------------------------

function show(view) {
  state.view = view;
  for (const name of ["sessions", "session", "overview"]) $(name + "-view").hidden = name !== view;
  for (const tab of document.querySelectorAll(".tab")) tab.classList.toggle("active", tab.dataset.view === view || (view === "session" && tab.dataset.view === "sessions"));
}

function route() {
  const view = location.hash.slice(1);
  if (view === "session" && state.session) return show("session");
  if (view === "overview") { show("overview"); return loadOverview(); }
  state.session = null;
  show("sessions");
  renderRows();
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    signIn($("key").value.trim());
  });
  $("logout").addEventListener("click", () => showLogin(""));
  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => { location.hash = "#" + tab.dataset.view; });
  }
  $("back").addEventListener("click", () => { location.hash = "#sessions"; });
  $("delete").addEventListener("click", deleteSession);
  for (const id of ["filter-model", "filter-reason", "filter-near-cap", "filter-looping"]) {
    $(id).addEventListener("change", () => renderRows());
  }
  $("all-tenants").addEventListener("change", () => {
    state.all = $("all-tenants").checked;
    state.rows.clear();
    renderRows();
    startStream();
  });
  for (const th of $("sessions").querySelectorAll("th")) {
    th.addEventListener("click", () => {
      const field = th.dataset.sort;
      state.sort = { field, desc: state.sort.field === field ? !state.sort.desc : true };
      renderRows();
    });
  }
  window.addEventListener("hashchange", route);
  setInterval(() => { if (state.view === "sessions") renderRows(); }, 15000); // "x s ago"
  fetch("/v1/console/info", { cache: "no-store" }).then((response) => {
    // an open gateway needs no key; one that wants a key asks for it
    if (state.key) signIn(state.key);
    else if (response.ok) signIn("");
    else showLogin("");
  }, () => showLogin("The gateway can't be reached."));
});
