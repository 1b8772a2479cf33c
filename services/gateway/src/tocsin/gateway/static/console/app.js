// The on-call console: the browser SDK for the live stream, the dashboard API
// (docs/dashboard-api.md) for lists, details and actions, plain DOM for the rest.
// The token comes from the URL fragment (#token=...), which browsers never send to
// servers, or the sign-in form; it is kept in this tab's session storage only.
import { TocsinClient } from "/sdk/tocsin-client.js";
import { healthChart, noisyChart, patternsChart, rateChart, timingChart } from "./charts.js";
import {
  SEVERITIES, absoluteTime, countBySeverity, duration, formatMatcher, fromSilenceMatcher, groupAlerts,
  labelsOf, matcherParam, matches, parseApiMatcher, parseMatchers, relativeTime, searchable,
  silenceMatcher, tokenClaims,
} from "./model.js";

const $ = (id) => document.getElementById(id);
const PAGE = 500; // alerts a request (the API's maximum)
const MOST_LOADED = 20000; // alerts kept per tab; beyond, the filter narrows the list
const FRESH_MS = 6000;
const OPEN = ["firing", "acknowledged"];

const state = {
  token: "",
  client: null,
  alerts: new Map(), // id -> summary or full record, whatever arrived last
  fresh: new Map(), // id -> when it last changed live
  loaded: { open: false, resolved: false },
  live: false, // the alerts channel is subscribed: lists loaded from now on miss nothing
  matchers: [],
  search: "",
  group: "",
  tab: "open",
  selected: null, // alert id
  detail: null, // the full record shown in the panel
  rows: [],
  health: null,
  expiresAt: null,
  subject: "",
};

// ---- elements ----------------------------------------------------------------------------

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function timeEl(value) {
  return el("time", { datetime: absoluteTime(value), title: absoluteTime(value), text: relativeTime(absoluteTime(value)) });
}

function safeLink(url, text) {
  // Only web links: an annotation is producer text, never a javascript: URL.
  return /^https?:\/\//i.test(url) ? el("a", { href: url, target: "_blank", rel: "noopener noreferrer", text: text || url }) : document.createTextNode(url);
}

// ---- the API -----------------------------------------------------------------------------

class ApiError extends Error {}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { authorization: `Bearer ${state.token}`, "content-type": "application/json" },
  });
  if (response.status === 401) {
    showLogin("The token was refused (expired or invalid): paste a new one.");
    throw new ApiError(`${path}: 401`);
  }
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  if (!response.ok) throw new ApiError(body?.detail || body?.title || `${path}: ${response.status}`);
  return body;
}

function flash(message) {
  $("list-status").textContent = message;
}

// ---- URL state (shareable views; the token never goes in the query) -----------------------

function readUrl() {
  const params = new URLSearchParams(location.search);
  state.tab = ["open", "resolved", "silences", "status"].includes(params.get("tab")) ? params.get("tab") : "open";
  $("matchers").value = params.getAll("label").map(parseApiMatcher).filter(Boolean).map(formatMatcher).join(" ");
  $("search").value = params.get("q") || "";
  $("group-by").value = params.get("group") || "";
  state.selected = params.get("alert");
  applyFilters(false);
}

function writeUrl() {
  const params = new URLSearchParams();
  if (state.tab !== "open") params.set("tab", state.tab);
  for (const matcher of state.matchers) params.append("label", matcherParam(matcher));
  if (state.search) params.set("q", state.search);
  if (state.group) params.set("group", state.group);
  if (state.selected && !$("detail").hidden) params.set("alert", state.selected);
  const query = params.toString();
  history.replaceState(null, "", `${location.pathname}${query ? `?${query}` : ""}`);
}

function applyFilters(reload = true) {
  try {
    state.matchers = parseMatchers($("matchers").value);
    $("filter-error").textContent = "";
  } catch (error) {
    $("filter-error").textContent = error.message;
    return;
  }
  state.search = $("search").value.trim().toLowerCase();
  state.group = $("group-by").value;
  writeUrl();
  if (reload) reloadAlerts();
  scheduleRender();
}

// ---- loading -----------------------------------------------------------------------------

async function loadTab(tab) {
  const statuses = tab === "resolved" ? ["resolved"] : OPEN;
  let cursor = null;
  let loaded = 0;
  let total = null;
  do {
    const params = new URLSearchParams({ limit: String(PAGE), status: statuses.join(",") });
    for (const matcher of state.matchers) params.append("label", matcherParam(matcher));
    if (cursor) params.set("cursor", cursor);
    const page = await api(`/v1/alerts?${params}`);
    if (total === null) total = page.total;
    for (const alert of page.alerts) {
      const known = state.alerts.get(alert.id);
      state.alerts.set(alert.id, known && (known.last_seen || "") > (alert.last_seen || "") ? known : { ...known, ...alert });
    }
    loaded += page.alerts.length;
    cursor = page.next_cursor;
    flash(`loaded ${loaded}${total !== null ? ` of ${total}` : ""}…`);
    scheduleRender();
  } while (cursor && loaded < MOST_LOADED);
  state.loaded[tab] = true;
  flash(cursor ? `showing the latest ${loaded} of ${total ?? "more"}: narrow the matchers to see the rest` : "");
}

async function reloadAlerts() {
  // Keep only what the new matchers admit, then ask the API for the rest.
  for (const [id, alert] of state.alerts) if (!matches(alert, state.matchers)) state.alerts.delete(id);
  state.loaded = { open: false, resolved: false };
  const tab = state.tab === "resolved" ? "resolved" : "open";
  try {
    await loadTab(tab);
  } catch (error) {
    flash(error.message);
  }
}

async function refreshStats() {
  try {
    const stats = await api("/v1/stats");
    const counts = $("severity-counts");
    counts.replaceChildren(...SEVERITIES.map((severity) => el("span", {
      class: `count ${severity}`, title: `${stats.open_by_severity[severity] ?? 0} open ${severity} alerts`,
      text: `${stats.open_by_severity[severity] ?? 0} ${severity}`,
    })));
    $("open-count").textContent = `(${(stats.by_status.firing ?? 0) + (stats.by_status.acknowledged ?? 0)})`;
    $("resolved-count").textContent = `(${stats.by_status.resolved ?? 0})`;
    if (state.tab === "status") $("rate-chart").replaceChildren(rateChart(stats.alerts_per_minute));
  } catch (error) {
    /* the connection state says enough */
  }
}

let statsTimer = null;
function scheduleStats() {
  if (statsTimer) return;
  statsTimer = setTimeout(() => { statsTimer = null; refreshStats(); }, 1000);
}

// ---- the virtual list ----------------------------------------------------------------------

function visibleAlerts() {
  const statuses = state.tab === "resolved" ? ["resolved"] : OPEN;
  const shown = [];
  for (const alert of state.alerts.values()) {
    if (!statuses.includes(alert.status)) continue;
    if (state.matchers.length && !matches(alert, state.matchers)) continue;
    if (state.search && !searchable(alert).includes(state.search)) continue;
    shown.push(alert);
  }
  return shown;
}

function buildRows() {
  const rows = [];
  for (const group of groupAlerts(visibleAlerts(), state.group)) {
    if (group.key !== null) rows.push({ kind: "group", key: group.key, alerts: group.alerts });
    for (const alert of group.alerts) rows.push({ kind: "alert", alert });
  }
  state.rows = rows;
}

let renderQueued = false;
let rowsStale = true;
// Data, filters or the tab changed: the rows are rebuilt (sorted, grouped) at the next frame.
// Scrolling only places the rows already built, so it stays cheap at 10,000 alerts.
function scheduleRender(rebuild = true) {
  if (rebuild) rowsStale = true;
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => { renderQueued = false; render(); });
}

const pool = new Map(); // row key -> element, reused while visible (so highlights play once)

function rowHeight() {
  return parseFloat(getComputedStyle(document.documentElement).getPropertyValue("--row")) || 44;
}

function render() {
  if (state.tab !== "open" && state.tab !== "resolved") return;
  const rebuilt = rowsStale;
  if (rowsStale) { buildRows(); rowsStale = false; }
  const list = $("list");
  const spacer = $("list-spacer");
  const height = rowHeight();
  spacer.style.height = `${state.rows.length * height}px`;
  const first = Math.max(0, Math.floor(list.scrollTop / height) - 8);
  const last = Math.min(state.rows.length, Math.ceil((list.scrollTop + list.clientHeight) / height) + 8);
  const keep = new Set();
  const now = Date.now();
  for (let index = first; index < last; index += 1) {
    const row = state.rows[index];
    const key = row.kind === "group" ? `group:${row.key}` : row.alert.id;
    keep.add(key);
    let node = pool.get(key);
    const signature = row.kind === "group" ? `${row.alerts.length}` : `${row.alert.status}|${row.alert.count}|${row.alert.last_seen}|${row.alert.acknowledged_by}|${row.alert.silenced}|${Math.floor(now / 15000)}`;
    if (!node || node.dataset.signature !== signature) {
      const fresh = row.kind === "alert" && now - (state.fresh.get(key) || 0) < FRESH_MS;
      const replacement = row.kind === "group" ? groupRow(row) : alertRow(row.alert, fresh && (!node || node.dataset.changed !== String(state.fresh.get(key))));
      replacement.dataset.signature = signature;
      if (row.kind === "alert") replacement.dataset.changed = String(state.fresh.get(key) || "");
      if (node) node.replaceWith(replacement); else spacer.append(replacement);
      node = replacement;
      pool.set(key, node);
    }
    node.style.top = `${index * height}px`;
    if (row.kind === "alert") node.setAttribute("aria-current", String(row.alert.id === state.selected));
  }
  for (const [key, node] of pool) {
    if (!keep.has(key)) { node.remove(); pool.delete(key); }
  }
  if (rebuilt) describeList(spacer);
}

function describeList(spacer) {
  const shown = state.rows.filter((row) => row.kind === "alert").length;
  const counts = countBySeverity(state.rows.filter((row) => row.kind === "alert").map((row) => row.alert));
  spacer.setAttribute("aria-label", `${shown} ${state.tab} alerts: ${SEVERITIES.map((s) => `${counts[s]} ${s}`).join(", ")}. j/k to move, Enter to open, a to ack, s to silence`);
  if (!shown && state.loaded[state.tab === "resolved" ? "resolved" : "open"] && !$("list-status").textContent) {
    flash(state.tab === "resolved" ? "No resolved alerts match." : "No open alerts match. All quiet.");
  } else if (shown && /^No /.test($("list-status").textContent)) {
    flash("");
  }
}

function groupRow(row) {
  const node = el("div", { class: "group", role: "listitem" },
    el("span", { text: `${state.group}: ${row.key || "(none)"}` },
      el("small", { text: `  ${row.alerts.length} alert${row.alerts.length === 1 ? "" : "s"}` })));
  if (row.key && state.tab === "open") {
    node.append(el("button", { type: "button", text: "Silence group", "aria-label": `silence every alert with ${state.group}=${row.key}`,
      onclick: () => openSilence([{ name: state.group === "alertname" ? "alertname" : state.group, op: "=", value: row.key }], `silencing ${state.group}=${row.key}`) }));
  }
  return node;
}

function statusText(alert) {
  let text = alert.status;
  if (alert.status === "acknowledged" && alert.acknowledged_by) text = `acked by ${alert.acknowledged_by}`;
  if (alert.status === "resolved" && alert.resolved_by) text = `resolved by ${alert.resolved_by}`;
  return text;
}

function alertRow(alert, fresh) {
  const acts = el("span", { class: "acts" });
  const label = `${alert.severity} ${alert.name}`;
  if (alert.status === "firing") acts.append(el("button", { type: "button", text: "Ack", "aria-label": `acknowledge ${label}`, onclick: (e) => { e.stopPropagation(); act(alert, "ack"); } }));
  if (alert.status === "acknowledged") acts.append(el("button", { type: "button", text: "Unack", "aria-label": `unacknowledge ${label}`, onclick: (e) => { e.stopPropagation(); act(alert, "unack"); } }));
  if (alert.status !== "resolved") {
    acts.append(el("button", { type: "button", text: "Silence", "aria-label": `silence ${label}`, onclick: (e) => { e.stopPropagation(); silenceAlert(alert); } }));
  }
  const flags = [alert.silenced && "silenced", alert.flapping && "flapping"].filter(Boolean);
  const node = el("div", {
    class: `row ${alert.severity} ${alert.status}${fresh ? " fresh" : ""}`, role: "listitem", "data-id": alert.id,
    onclick: () => { select(alert.id); openDetail(alert.id); },
  },
  el("span", { class: "sev", text: alert.severity }),
  el("span", { class: "status", text: statusText(alert) }),
  el("span", { class: "name", title: `${alert.name}${alert.summary ? ` — ${alert.summary}` : ""}` },
    el("a", { href: `?alert=${encodeURIComponent(alert.id)}`, text: alert.name, onclick: (e) => { e.preventDefault(); } }),
    alert.summary ? el("small", { text: alert.summary }) : null,
    ...flags.map((flag) => el("span", { class: "badge", text: flag }))),
  el("span", { class: "service", text: alert.service || alert.labels?.team || "" }),
  el("span", { class: "count", title: "occurrences", text: `×${alert.count ?? 1}` }),
  el("span", { class: "when" }, timeEl(alert.last_seen)),
  acts);
  return node;
}

function select(id, scroll = false) {
  state.selected = id;
  if (scroll) {
    const index = state.rows.findIndex((row) => row.kind === "alert" && row.alert.id === id);
    const list = $("list");
    const height = rowHeight();
    if (index * height < list.scrollTop) list.scrollTop = index * height;
    else if ((index + 1) * height > list.scrollTop + list.clientHeight) list.scrollTop = (index + 1) * height - list.clientHeight;
  }
  scheduleRender(false);
}

function move(step) {
  const ids = state.rows.filter((row) => row.kind === "alert").map((row) => row.alert.id);
  if (!ids.length) return;
  const at = ids.indexOf(state.selected);
  const next = ids[Math.min(ids.length - 1, Math.max(0, at === -1 ? 0 : at + step))];
  select(next, true);
  if (!$("detail").hidden) openDetail(next);
}

// ---- actions -----------------------------------------------------------------------------

function askComment(title, initial = "") {
  const dialog = $("comment-dialog");
  $("comment-title").textContent = title;
  $("comment-input").value = initial;
  dialog.showModal();
  return new Promise((resolve) => {
    $("comment-cancel").onclick = () => { dialog.close(); resolve(null); };
    $("comment-form").onsubmit = (event) => { event.preventDefault(); dialog.close(); resolve($("comment-input").value.trim()); };
    dialog.oncancel = () => resolve(null);
  });
}

const VERBS = { ack: "Acknowledge", unack: "Unacknowledge", resolve: "Resolve" };

async function act(alert, verb) {
  const comment = await askComment(`${VERBS[verb]} ${alert.name}: comment`);
  if (comment === null) return;
  try {
    await api(`/v1/alerts/${encodeURIComponent(alert.id)}/${verb}`, { method: "POST", body: JSON.stringify({ comment }) });
    flash(`${VERBS[verb]} of ${alert.name} sent as ${state.subject || "you"}; the list updates when it is applied.`);
  } catch (error) {
    flash(`${VERBS[verb]} failed: ${error.message}`);
  }
}

function silenceAlert(alert) {
  const matchers = Object.entries(labelsOf(alert)).map(([name, value]) => ({ name, op: "=", value }));
  openSilence(matchers, `silencing ${alert.name}`);
}

function openSilence(matchers, comment = "") {
  $("silence-matchers").value = matchers.map(formatMatcher).join("\n");
  $("silence-comment").value = comment;
  $("silence-error").textContent = "";
  const dialog = $("silence-dialog");
  dialog.showModal();
  $("silence-cancel").onclick = () => dialog.close();
  $("silence-form").onsubmit = async (event) => {
    event.preventDefault();
    let parsed;
    try {
      parsed = parseMatchers($("silence-matchers").value.split("\n").join(" "));
      if (!parsed.length) throw new Error("at least one matcher");
    } catch (error) {
      $("silence-error").textContent = error.message;
      return;
    }
    const now = Date.now();
    const body = {
      matchers: parsed.map(silenceMatcher),
      startsAt: new Date(now).toISOString(),
      endsAt: new Date(now + Number($("silence-duration").value) * 1000).toISOString(),
      comment: $("silence-comment").value.trim(),
      createdBy: state.subject,
    };
    try {
      const created = await api("/v1/silences", { method: "POST", body: JSON.stringify(body) });
      dialog.close();
      flash(`silence ${created.id.slice(0, 8)} created until ${absoluteTime(created.endsAt)}`);
      if (state.tab === "silences") loadSilences();
    } catch (error) {
      $("silence-error").textContent = error.message;
    }
  };
}

// ---- the detail panel --------------------------------------------------------------------

async function openDetail(id) {
  state.selected = id;
  const panel = $("detail");
  panel.hidden = false;
  document.body.classList.add("with-detail");
  writeUrl();
  try {
    state.detail = await api(`/v1/alerts/${encodeURIComponent(id)}`);
  } catch (error) {
    panel.replaceChildren(closeButton(), el("p", { class: "error", text: error.message }));
    return;
  }
  renderDetail();
}

function closeButton() {
  return el("button", { type: "button", class: "close", text: "Close", "aria-label": "close the detail", onclick: closeDetail });
}

function closeDetail() {
  $("detail").hidden = true;
  document.body.classList.remove("with-detail");
  state.detail = null;
  writeUrl();
  $("list").focus();
}

function dl(entries, value = (v) => document.createTextNode(v)) {
  if (!entries.length) return el("p", { text: "none" });
  return el("dl", {}, ...entries.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", {}, value(v, k))]));
}

function annotationValue(text, name) {
  if (/^https?:\/\//i.test(text)) return safeLink(text, /runbook/i.test(name) ? `runbook: ${text}` : text);
  return document.createTextNode(text);
}

function renderDetail() {
  const alert = state.detail;
  if (!alert) return;
  const actions = el("div", { class: "actions" });
  if (alert.status === "firing") actions.append(el("button", { type: "button", text: "Acknowledge (a)", onclick: () => act(alert, "ack") }));
  if (alert.status === "acknowledged") actions.append(el("button", { type: "button", text: "Unacknowledge", onclick: () => act(alert, "unack") }));
  if (alert.status !== "resolved") {
    actions.append(el("button", { type: "button", text: "Resolve", onclick: () => act(alert, "resolve") }));
    actions.append(el("button", { type: "button", text: "Silence (s)", onclick: () => silenceAlert(alert) }));
  }
  const facts = [
    ["status", statusText(alert)], ["severity", alert.severity], ["service", alert.service || "–"],
    ["occurrences", String(alert.count)], ["first seen", absoluteTime(alert.first_seen)], ["last seen", absoluteTime(alert.last_seen)],
  ];
  if (alert.acknowledged_at) facts.push(["acknowledged", `${absoluteTime(alert.acknowledged_at)} by ${alert.acknowledged_by || "?"}`]);
  if (alert.resolved_at) facts.push(["resolved", `${absoluteTime(alert.resolved_at)}${alert.resolved_by ? ` by ${alert.resolved_by}` : ""}`]);
  if (alert.silenced) facts.push(["silenced", "yes: not notified"]);
  if (alert.flapping) facts.push(["flapping", "yes"]);
  const links = [];
  if (alert.generator_url) links.push(safeLink(alert.generator_url, "generator (source query)"));
  // Filled by the prediction jobs when they have a forecast for this alert.
  const prediction = el("section", { id: "prediction", "aria-label": "prediction" });
  if (alert.prediction) {
    prediction.className = "prediction";
    prediction.append(el("h3", { text: "Prediction" }));
    const p = alert.prediction;
    if (p.enough_history && p.median_seconds !== undefined) {
      prediction.append(el("p", { text: `${p.episodes} past episodes: half ended within ${duration(p.median_seconds)}, 9 in 10 within ${duration(p.p90_seconds)}; `
        + `${Math.round((p.transient_probability ?? 0) * 100)}% ended by themselves within ${duration(p.window_seconds)}.` }));
    } else if (p.enough_history === false) {
      prediction.append(el("p", { text: `Too little history to predict (${p.episodes ?? 0} of ${p.min_episodes ?? "?"} episodes).` }));
    }
    prediction.append(dl(Object.entries(p).filter(([k]) => k !== "alert_id").map(([k, v]) => [k.replace(/_/g, " "), typeof v === "object" ? JSON.stringify(v) : String(v)])));
  }
  const timeline = (alert.timeline || []).map((entry) => el("li", {},
    el("strong", { text: entry.kind }), " ", timeEl(entry.at),
    entry.by ? ` by ${entry.by}` : "", entry.comment ? ` — “${entry.comment}”` : ""));
  const notifications = (alert.notifications || []).map((attempt) => el("li", {},
    el("strong", { class: `outcome-${attempt.outcome}`, text: attempt.outcome }),
    ` ${attempt.receiver} (${attempt.receiver_type}), ${attempt.status}, attempt ${attempt.attempt}, `, timeEl(attempt.at),
    attempt.error ? el("div", { class: "error", text: attempt.error }) : null));
  $("detail").replaceChildren(
    closeButton(),
    el("h2", { text: alert.name }),
    alert.summary ? el("p", { text: alert.summary }) : null,
    actions,
    prediction,
    dl(facts),
    links.length ? el("p", {}, ...links) : null,
    el("h3", { text: "Labels" }), dl(Object.entries(alert.labels || {})),
    el("h3", { text: "Annotations" }), dl(Object.entries(alert.annotations || {}), annotationValue),
    el("h3", { text: "Timeline" }), timeline.length ? el("ol", {}, ...timeline) : el("p", { text: "no transitions" }),
    el("h3", { text: "Notifications" }), notifications.length ? el("ol", {}, ...notifications) : el("p", { text: "none sent" }),
  );
}

// ---- silences ----------------------------------------------------------------------------

async function loadSilences() {
  const target = $("silences");
  try {
    const silences = await api("/v1/silences");
    const rows = silences.map((silence) => el("tr", {},
      el("td", {}, ...silence.matchers.map((m) => el("span", { class: "matcher", text: formatMatcher(fromSilenceMatcher(m)) }))),
      el("td", { text: silence.status.state }),
      el("td", {}, timeEl(silence.startsAt), " → ", timeEl(silence.endsAt)),
      el("td", { text: silence.createdBy }),
      el("td", { text: silence.comment }),
      el("td", {}, silence.status.state === "expired" ? null : el("button", { type: "button", text: "Expire", "aria-label": `expire silence ${silence.id.slice(0, 8)}`,
        onclick: async () => { try { await api(`/v1/silences/${encodeURIComponent(silence.id)}`, { method: "DELETE" }); loadSilences(); } catch (error) { flash(error.message); } } }))));
    target.replaceChildren(
      el("div", { class: "filters" }, el("button", { type: "button", text: "New silence from the matchers", onclick: () => openSilence(state.matchers, "") })),
      silences.length
        ? el("table", { class: "silences" }, el("thead", {}, el("tr", {}, ...["Matchers", "State", "When", "By", "Comment", ""].map((h) => el("th", { scope: "col", text: h })))), el("tbody", {}, ...rows))
        : el("p", { class: "filters", text: "No silences." }),
    );
  } catch (error) {
    target.replaceChildren(el("p", { class: "error", text: error.message }));
  }
}

// ---- status ------------------------------------------------------------------------------

function showHealth(report) {
  state.health = report;
  const badge = $("health");
  badge.textContent = report ? `health ${Math.round(report.score)}` : "health –";
  badge.title = "health score: not computed yet (the scheduler computes one every 15 s)";
  if (report) {
    const low = report.components.filter((c) => c.contribution < c.weight).map((c) => `${c.name} ${c.contribution}/${c.weight}`);
    badge.title = `health score ${report.score}/100${low.length ? `; pulled down by ${low.join(", ")}` : "; every component at full marks"}. Open Status for the picture.`;
  }
  if (state.tab === "status") $("health-chart").replaceChildren(healthChart(report));
}

async function loadStatus() {
  const [health, analytics, patterns] = await Promise.all([
    api("/v1/health").catch(() => null),
    api(`/v1/analytics/daily${$("analytics-date").value ? `?date=${$("analytics-date").value}` : ""}`).catch(() => null),
    api("/v1/patterns").catch(() => null),
  ]);
  showHealth(health);
  $("timing-chart").replaceChildren(timingChart(analytics));
  $("noisy-chart").replaceChildren(noisyChart(analytics));
  $("patterns-chart").replaceChildren(patternsChart(patterns));
  await refreshStats();
}

// ---- tabs --------------------------------------------------------------------------------

function showTab(tab) {
  state.tab = tab;
  for (const link of document.querySelectorAll(".tab")) {
    if (link.dataset.tab === tab) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
  }
  $("alerts-view").hidden = !(tab === "open" || tab === "resolved");
  $("silences-view").hidden = tab !== "silences";
  $("status-view").hidden = tab !== "status";
  writeUrl();
  if (!state.token) return;
  if (tab === "silences") loadSilences();
  if (tab === "status") loadStatus();
  if ((tab === "open" || tab === "resolved") && !state.loaded[tab] && state.live) loadTab(tab).catch((error) => flash(error.message));
  for (const node of pool.values()) node.remove();
  pool.clear();
  scheduleRender();
}

// ---- the live stream and the token ---------------------------------------------------------

function onEvent(frame) {
  const data = frame.data || {};
  if (data.alert && data.alert.id) {
    const known = state.alerts.get(data.alert.id);
    state.alerts.set(data.alert.id, { ...known, ...data.alert });
    state.fresh.set(data.alert.id, Date.now());
    if (state.detail && state.detail.id === data.alert.id) openDetail(data.alert.id);
    scheduleRender();
    scheduleStats();
  }
  // A prediction may come alone (`alert.predicted`): it joins its alert, and the open detail.
  const predicted = data.alert_id || data.id;
  if (!data.alert && data.prediction && predicted) {
    const known = state.alerts.get(predicted);
    if (known) state.alerts.set(predicted, { ...known, prediction: data.prediction });
    if (state.detail && state.detail.id === predicted) {
      state.detail.prediction = data.prediction;
      renderDetail();
    }
  }
  // `health.changed` carries the whole report under `health`.
  if (data.health && typeof data.health.score === "number") showHealth(data.health);
  if (data.type === "patterns.detected" && state.tab === "status") $("patterns-chart").replaceChildren(patternsChart(data.patterns));
}

function setConnection(text) {
  const node = $("connection");
  node.dataset.state = text;
  node.textContent = text === "open" ? "live" : text;
}

let expiryTimer = null;
function onExpiry(expiresAt) {
  state.expiresAt = expiresAt;
  clearInterval(expiryTimer);
  const warn = () => {
    const left = state.expiresAt - Date.now() / 1000;
    const banner = $("expiry");
    if (left > 300) { banner.hidden = true; return; }
    banner.hidden = false;
    banner.textContent = left > 0
      ? `Token expires in ${Math.ceil(left / 60)} min: open a new #token= link in this tab (it is taken without a reload).`
      : "Token expired: open a new #token= link or sign in again.";
  };
  warn();
  expiryTimer = setInterval(warn, 15000);
}

function showLogin(message = "") {
  $("login").hidden = false;
  $("login-error").textContent = message;
  setConnection("stopped");
}

function adoptToken(token) {
  const previous = state.token;
  state.token = token;
  sessionStorage.setItem("tocsin-token", token);
  const claims = tokenClaims(token);
  state.subject = claims.sub || "";
  if (claims.exp) onExpiry(claims.exp);
  $("login").hidden = true;
  if (state.client && previous && tokenClaims(previous).sub === claims.sub) {
    // Same person: renew the open socket's token in band, no reconnect, nothing missed.
    state.client.refresh().then((sent) => { if (!sent) restart(); });
    flash("token renewed");
    return;
  }
  restart();
}

function restart() {
  if (state.client) state.client.stop();
  state.alerts.clear();
  state.loaded = { open: false, resolved: false };
  state.live = false;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  state.client = new TocsinClient({
    url: `${scheme}://${location.host}/ws`,
    token: () => state.token, // asked again on every connect and on `token_expiring`
    channels: ["alerts", "system"],
    onStatus: setConnection,
    onExpiry,
    onReset: (channel) => { if (channel === "alerts" && state.live) reloadAlerts(); },
    // The list is read only once the socket is subscribed: read before, an alert
    // created between the read and the subscription would be in neither.
    onSubscribed: (channel) => { if (channel === "alerts" && !state.live) { state.live = true; reloadAlerts(); } },
    onEvent,
    onFatal: (error) => showLogin(`The gateway closed the connection: ${error.reason || error.code}.`),
  });
  state.client.start();
  showTab(state.tab);
  refreshStats();
  api("/v1/health").then(showHealth).catch(() => showHealth(null));
  if (state.selected && new URLSearchParams(location.search).get("alert")) openDetail(state.selected);
}

function tokenFromFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get("token");
  if (token) history.replaceState(null, "", `${location.pathname}${location.search}`);
  return token;
}

// ---- keyboard ----------------------------------------------------------------------------

function onKey(event) {
  if (event.target.closest("input, textarea, select, dialog") || event.metaKey || event.ctrlKey || event.altKey) return;
  const selected = state.alerts.get(state.selected);
  switch (event.key) {
    case "j": move(1); break;
    case "k": move(-1); break;
    case "Enter": if (selected) openDetail(selected.id); break;
    case "Escape": if (!$("detail").hidden) closeDetail(); break;
    case "a": if (selected) act(selected, selected.status === "acknowledged" ? "unack" : "ack"); break;
    case "s": if (selected) silenceAlert(selected); break;
    case "r": if (selected && selected.status !== "resolved") act(selected, "resolve"); break;
    case "/": event.preventDefault(); $("search").focus(); break;
    default: return;
  }
  event.preventDefault();
}

// ---- start -------------------------------------------------------------------------------

function main() {
  $("filters").addEventListener("submit", (event) => { event.preventDefault(); applyFilters(); });
  $("search").addEventListener("input", () => applyFilters(false));
  $("group-by").addEventListener("change", () => applyFilters(false));
  $("list").addEventListener("scroll", () => scheduleRender(false), { passive: true });
  window.addEventListener("resize", () => scheduleRender(false));
  document.addEventListener("keydown", onKey);
  $("health").addEventListener("click", () => showTab("status"));
  for (const link of document.querySelectorAll(".tab")) {
    link.addEventListener("click", (event) => { event.preventDefault(); showTab(link.dataset.tab); });
  }
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    adoptToken($("token-input").value.trim());
  });
  // A `#token=` link pasted into this open tab: taken at once, without a reload.
  window.addEventListener("hashchange", () => {
    const token = tokenFromFragment();
    if (token) adoptToken(token);
  });
  $("analytics-date").value = new Date(Date.now() - 86400000).toISOString().slice(0, 10);
  $("analytics-form").addEventListener("submit", (event) => { event.preventDefault(); loadStatus(); });
  setInterval(() => scheduleRender(false), 15000); // relative times age
  window.tocsinConsole = state; // for the browser's developer tools (and the browser tests)
  // The fragment first: writing the view's query to the URL drops it.
  const token = tokenFromFragment() || sessionStorage.getItem("tocsin-token") || "";
  readUrl();
  showTab(state.tab);
  if (token) adoptToken(token); else showLogin();
}

main();
