// The live status page: polls the admin API once a second and builds the
// DOM with textContent only (node ids and addresses come from ZooKeeper and
// are never parsed as HTML). With an admin token configured, a 401 shows a
// form; the token is kept in this tab's sessionStorage and sent as
// `Authorization: Bearer`.
"use strict";

const TOKEN_KEY = "kylin-gateway-admin-token";
const MAX_EVENTS = 300;
let lastSeq = 0;
let leaderSince = null; // { id, timeMs }
let pluginCalls = new Map(); // name -> { calls, at }
let ejectReasons = new Map(); // node id -> why it was last ejected

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) {
    if (c instanceof Node) tr.appendChild(c); else tr.appendChild(el("td", c));
  }
  return tr;
}

class Unauthorized extends Error {}

async function get(path) {
  const headers = {};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers["Authorization"] = "Bearer " + token;
  const r = await fetch(path, { headers, cache: "no-store" });
  if (r.status === 401) throw new Unauthorized();
  if (r.status === 404) return null;
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}

function duration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
}

function clock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour12: false });
}

function ms(v) {
  return v === null || v === undefined ? "–" : (v < 10 ? v.toFixed(2) : v.toFixed(0)) + " ms";
}

function sparkline(series) {
  const NS = "http://www.w3.org/2000/svg";
  const w = 90, h = 18;
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("width", w);
  svg.setAttribute("height", h);
  svg.setAttribute("viewBox", "0 0 " + w + " " + h);
  const max = Math.max(1, ...series);
  const step = series.length > 1 ? w / (series.length - 1) : w;
  const points = series.map((v, i) =>
    (i * step).toFixed(1) + "," + (h - 1 - (v / max) * (h - 2)).toFixed(1));
  const line = document.createElementNS(NS, "polyline");
  line.setAttribute("points", points.join(" "));
  svg.appendChild(line);
  const title = document.createElementNS(NS, "title");
  title.textContent = "requests per 10 s, last 5 min (max " + max + ")";
  svg.appendChild(title);
  return svg;
}

function nodeState(n) {
  if (!n.enabled) return ["disabled", "disabled"];
  if (!n.connect) return ["unresolvable", "unresolvable" + (n.resolve_error ? ": " + n.resolve_error : "")];
  if (n.ejected) {
    const why = ejectReasons.get(n.id);
    return ["ejected", "ejected until " + clock(Date.now() + (n.ejected_for_ms || 0)) + (why ? ": " + why : "")];
  }
  return ["healthy", "healthy"];
}

function renderHeader(view, leader, nodes) {
  document.getElementById("view-version").textContent = "view v" + view.version;
  document.getElementById("view-source").textContent = "from " + (view.source || "–");
  const stale = document.getElementById("view-stale");
  stale.textContent = view.stale ? "stale" : "fresh";
  stale.className = "pill " + (view.stale ? "bad" : "ok");
  const zk = document.getElementById("zk-session");
  zk.textContent = view.zookeeper_session ? "ZooKeeper: " + view.zookeeper_session : "";
  zk.className = "pill " + (view.zookeeper_session === "connected" ? "ok" : "bad");
  const l = document.getElementById("leader");
  if (leader.leader) {
    let text = "♛ " + leader.leader + " (" + (leader.address || "?") + ")";
    if (leaderSince && leaderSince.id === leader.leader) {
      text += " for " + duration(Date.now() - leaderSince.timeMs);
    }
    l.textContent = text;
    l.className = "leader";
  } else if (leader.job_routing === "any-job-node") {
    l.textContent = "no leader election: job calls go to any job node";
    l.className = "leader";
  } else {
    l.textContent = "no leader" + (leader.reason ? ": " + leader.reason : "");
    l.className = "leader error";
  }
}

function renderNodes(nodes) {
  const body = document.querySelector("#nodes tbody");
  const rows = nodes.map((n) => {
    const [cls, text] = nodeState(n);
    const id = el("td", (n.is_leader ? "♛ " : "") + n.id);
    const state = el("td", text, "state-" + cls);
    const spark = el("td");
    spark.appendChild(sparkline((n.window && n.window.series) || []));
    const w = n.window || {};
    const tr = row([id, n.address, (n.modes || []).join(","), state,
      el("td", n.in_flight, "num"),
      el("td", (w.requests_per_second || 0).toFixed(2), "num"),
      el("td", ms(w.p50_ms), "num"), el("td", ms(w.p99_ms), "num"), spark]);
    tr.setAttribute("data-node", n.id);
    return tr;
  });
  body.replaceChildren(...rows);
}

function noteEvent(e) {
  if (e.kind === "ejected" && e.detail && e.detail.node) ejectReasons.set(e.detail.node, e.detail.reason);
  if (e.kind === "leader" && e.detail && e.detail.new) {
    leaderSince = { id: e.detail.new, timeMs: e.time_ms };
  } else if (e.kind === "view" && e.detail && e.detail.leader && !leaderSince) {
    leaderSince = { id: e.detail.leader, timeMs: e.time_ms };
  }
}

function renderEvents(page) {
  const list = document.getElementById("events");
  for (const e of page.events) {
    noteEvent(e);
    const li = el("li");
    li.setAttribute("data-kind", e.kind);
    const t = el("time", clock(e.time_ms));
    t.setAttribute("datetime", new Date(e.time_ms).toISOString());
    li.append(t, el("span", e.kind, "kind kind-" + e.kind), el("span", e.message, "msg"));
    list.prepend(li);
    lastSeq = Math.max(lastSeq, e.seq);
  }
  while (list.children.length > MAX_EVENTS) list.lastChild.remove();
}

function renderPlugins(plugins) {
  const section = document.getElementById("plugins-section");
  section.hidden = !plugins || plugins.length === 0;
  if (section.hidden) return;
  const now = Date.now();
  const rows = plugins.map((p) => {
    const calls = (p.stats && p.stats.calls) || 0;
    const prev = pluginCalls.get(p.name);
    const rate = prev && now > prev.at ? ((calls - prev.calls) * 1000) / (now - prev.at) : 0;
    pluginCalls.set(p.name, { calls, at: now });
    const failures = Object.entries((p.stats && p.stats.failures) || {})
      .filter(([, n]) => n > 0).map(([k, n]) => k + ": " + n).join(", ") || "none";
    const lastError = p.last_reload_error || (p.stats && p.stats.last_failure) || "";
    return row([p.name, (p.sha256 || "").slice(0, 12),
      p.loaded_at_unix ? new Date(p.loaded_at_unix * 1000).toLocaleString() : "–",
      el("td", rate.toFixed(1), "num"), failures, el("td", lastError, lastError ? "error" : "")]);
  });
  document.querySelector("#plugins tbody").replaceChildren(...rows);
}

function renderTls(tls) {
  const section = document.getElementById("tls-section");
  section.hidden = !tls;
  if (!tls) return;
  const now = Date.now();
  const rows = (tls.certs || []).map((c) => {
    const expires = c.not_after_unix ? c.not_after_unix * 1000 : Date.parse(c.not_after);
    const left = expires - now;
    const soon = left < 14 * 86400 * 1000;
    return row([c.name, c.subject, c.not_after,
      el("td", left < 0 ? "expired" : duration(left), soon ? "error" : ""),
      el("td", c.last_reload_error || "", "error")]);
  });
  document.querySelector("#tls tbody").replaceChildren(...rows);
}

// "share of total" for one limit: this gateway's share and the fleet's.
function quotaCell(allowed, configured) {
  if (configured === null || configured === undefined) return el("td", "–", "num");
  return el("td", allowed === configured ? configured : allowed + " of " + configured, "num");
}

function renderQuotas(limits) {
  const section = document.getElementById("quotas-section");
  const projects = (limits && limits.projects) || [];
  section.hidden = projects.length === 0;
  if (section.hidden) return;
  const n = limits.gateways;
  document.getElementById("quotas-fleet").textContent =
    "this gateway's share of each total, " + n + " gateway" + (n === 1 ? "" : "s");
  const rows = projects.map((p) => {
    const c = p.configured, a = p.allowed;
    const rate = quotaCell(a.rate_per_s, c.rate_per_s);
    if (c.burst) rate.textContent += " (" + (a.burst === c.burst ? c.burst : a.burst + " of " + c.burst) + ")";
    const rejected = (k) => el("td", p.rejected[k], "num" + (p.rejected[k] > 0 ? " error" : ""));
    const tr = row([el("td", p.name + (p.listed ? "" : " (default)")),
      quotaCell(a.max_concurrent, c.max_concurrent), rate,
      el("td", p.in_flight, "num"), el("td", p.admitted, "num"),
      rejected("max_concurrent"), rejected("rate_per_s")]);
    tr.setAttribute("data-project", p.name);
    return tr;
  });
  document.querySelector("#quotas tbody").replaceChildren(...rows);
}

// The gateways sharing this one's ZooKeeper; a gateway whose plugins
// differ from the most common set (or that refused a version) is marked.
function renderFleet(fleet) {
  const section = document.getElementById("fleet-section");
  section.hidden = !fleet || !fleet.enabled;
  if (section.hidden) return;
  const n = fleet.gateways;
  document.getElementById("fleet-summary").textContent =
    n + " gateway" + (n === 1 ? "" : "s") +
    (fleet.consistent ? ", same plugins everywhere" : ", plugins differ") +
    (fleet.connected ? "" : ", ZooKeeper disconnected");
  const rows = (fleet.members || []).map((m) => {
    const plugins = (m.plugins || []).map((p) =>
      p.name + " " + (p.sha256 || "–").slice(0, 12) + (p.error ? " (refused: " + p.error + ")" : "")).join(", ");
    const tr = row([m.id + (m.self ? " (this)" : ""), m.address + ":" + (m.port || m.ssl_port || ""),
      m.version, new Date(m.started_at_ms).toLocaleString(),
      el("td", plugins || "none", m.plugins_differ ? "error" : "")]);
    tr.setAttribute("data-gateway", m.id);
    return tr;
  });
  document.querySelector("#fleet tbody").replaceChildren(...rows);
}

let tlsChecked = 0;
let tlsOn = true;

async function poll() {
  const status = document.getElementById("poll-status");
  try {
    const wantTls = tlsOn || Date.now() - tlsChecked > 30000;
    const [view, leader, nodes, events, plugins, tls, limits, fleet] = await Promise.all([
      get("/admin/view"), get("/admin/leader"), get("/admin/nodes"),
      get("/admin/events?since=" + lastSeq), get("/admin/plugins"),
      wantTls ? get("/admin/tls") : Promise.resolve(null),
      get("/admin/limits"), get("/admin/fleet"),
    ]);
    if (wantTls) { tlsChecked = Date.now(); tlsOn = tls !== null; }
    renderEvents(events);
    renderHeader(view, leader, nodes);
    renderNodes(nodes);
    renderPlugins(plugins);
    renderQuotas(limits);
    renderFleet(fleet);
    if (wantTls) renderTls(tls);
    document.getElementById("token-form").hidden = true;
    status.textContent = "updated " + clock(Date.now());
    status.className = "muted";
  } catch (e) {
    if (e instanceof Unauthorized) {
      document.getElementById("token-form").hidden = false;
      status.textContent = "unauthorized: enter the admin token";
    } else {
      status.textContent = "cannot reach the gateway: " + e.message;
    }
    status.className = "muted error";
  }
}

document.getElementById("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value);
  document.getElementById("token").value = "";
  poll();
});

poll();
setInterval(poll, 1000);
