// The console's pure logic: label matchers (the API's syntax), ordering, grouping, times.
// No DOM here, so it reads as the domain.

export const SEVERITIES = ["critical", "error", "warning", "info"];
const SEVERITY_RANK = Object.fromEntries(SEVERITIES.map((s, i) => [s, i]));
const STATUS_RANK = { firing: 0, acknowledged: 1, resolved: 2 };

// name, op, value; the value may be quoted ("..." with \" escapes) to hold spaces.
const MATCHER = /^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|[^\s,]*)\s*,?/;

// `alertname=DiskFull host=~"db-.*"` -> [{name, op, value}]; throws on anything else.
export function parseMatchers(text) {
  const matchers = [];
  let rest = (text || "").trim().replace(/^\{|\}$/g, "");
  while (rest.trim()) {
    const found = MATCHER.exec(rest);
    if (!found) throw new Error(`not a matcher: ${rest.trim().split(/\s/)[0]} (name=value, name!=value, name=~regex, name!~regex)`);
    let value = found[3];
    if (value.startsWith('"')) value = JSON.parse(value);
    if (found[2].includes("~")) {
      try { new RegExp(value); } catch (error) { throw new Error(`${found[1]}: invalid regex: ${error.message}`); }
    }
    matchers.push({ name: found[1], op: found[2], value });
    rest = rest.slice(found[0].length);
  }
  return matchers;
}

export function formatMatcher({ name, op, value }) {
  return /^[^\s",]*$/.test(value) ? `${name}${op}${value}` : `${name}${op}${JSON.stringify(value)}`;
}

// One `label` parameter of the API (`name=~value`, the value taken whole).
export function parseApiMatcher(raw) {
  const found = /^([A-Za-z_][A-Za-z0-9_]*)(=~|!~|!=|=)([\s\S]*)$/.exec(raw);
  return found ? { name: found[1], op: found[2], value: found[3] } : null;
}

// Alertmanager's silence matcher back to the console's.
export function fromSilenceMatcher({ name, value, isRegex = false, isEqual = true }) {
  return { name, value, op: isRegex ? (isEqual ? "=~" : "!~") : (isEqual ? "=" : "!=") };
}

// The API's `label` parameter of one matcher.
export function matcherParam({ name, op, value }) {
  return `${name}${op}${value}`;
}

// Alertmanager's silence matcher of one console matcher.
export function silenceMatcher({ name, op, value }) {
  return { name, value, isRegex: op.includes("~"), isEqual: op[0] === "=" };
}

export function labelsOf(alert) {
  return { alertname: alert.name, ...(alert.labels || {}) };
}

// A missing label matches as the empty string; regexes are anchored (as in the API).
export function matches(alert, matchers) {
  const labels = labelsOf(alert);
  return matchers.every(({ name, op, value }) => {
    const actual = labels[name] ?? "";
    const found = op.includes("~") ? new RegExp(`^(?:${value})$`).test(actual) : actual === value;
    return found === (op[0] === "=");
  });
}

export function searchable(alert) {
  return [alert.name, alert.summary, alert.service, ...Object.entries(alert.labels || {}).map(([k, v]) => `${k}=${v}`)]
    .join(" ").toLowerCase();
}

// Critical first, then firing before acknowledged, then the latest change first.
export function compareAlerts(a, b) {
  return (SEVERITY_RANK[a.severity] ?? 9) - (SEVERITY_RANK[b.severity] ?? 9)
    || (STATUS_RANK[a.status] ?? 9) - (STATUS_RANK[b.status] ?? 9)
    || (b.last_seen || "").localeCompare(a.last_seen || "")
    || a.id.localeCompare(b.id);
}

export function groupValue(alert, label) {
  if (label === "severity") return alert.severity;
  if (label === "status") return alert.status;
  if (label === "service") return alert.service || alert.labels?.service || "";
  return labelsOf(alert)[label] ?? "";
}

// Rows for the virtual list: [{group, alerts}] ordered by their worst alert, or one group.
export function groupAlerts(alerts, label) {
  const sorted = [...alerts].sort(compareAlerts);
  if (!label) return [{ key: null, alerts: sorted }];
  const groups = new Map();
  for (const alert of sorted) {
    const key = groupValue(alert, label);
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(alert);
  }
  // Map keeps insertion order, so groups come in the order of their worst alert.
  return [...groups].map(([key, members]) => ({ key, alerts: members }));
}

export function countBySeverity(alerts) {
  const counts = Object.fromEntries(SEVERITIES.map((s) => [s, 0]));
  for (const alert of alerts) if (alert.severity in counts) counts[alert.severity] += 1;
  return counts;
}

const UNITS = [["d", 86400], ["h", 3600], ["m", 60], ["s", 1]];

export function relativeTime(iso, now = Date.now()) {
  if (!iso) return "";
  const seconds = Math.round((now - Date.parse(iso)) / 1000);
  if (!Number.isFinite(seconds)) return "";
  if (Math.abs(seconds) < 5) return "just now";
  const magnitude = Math.abs(seconds);
  const [unit, size] = UNITS.find(([, size]) => magnitude >= size);
  const amount = Math.floor(magnitude / size);
  return seconds >= 0 ? `${amount}${unit} ago` : `in ${amount}${unit}`;
}

export function absoluteTime(value) {
  if (value === undefined || value === null || value === "") return "";
  const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toISOString().replace(".000Z", "Z");
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 90) return `${Math.round(seconds)}s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)}m`;
  return `${(seconds / 3600).toFixed(1)}h`;
}

// The claims of a JWT, unverified (only to show who and until when).
export function tokenClaims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "=")));
  } catch {
    return {};
  }
}
