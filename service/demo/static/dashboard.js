// The demo dashboard: polls GET /stats (same origin) every 2 s and draws it, keeps a
// heartbeat WebSocket on /api/ws-heartbeat, and can send a little real API traffic.
// No dependencies. Every value from /stats is written with textContent, never as HTML.
"use strict";

const POLL_MS = 2000;
const STATS_TIMEOUT_MS = 5000;
const HEARTBEAT_MS = 5000;
const RECONNECT_MIN_MS = 1000;
const RECONNECT_MAX_MS = 30000;
const STABLE_SOCKET_MS = 10000; // a socket open this long resets the reconnect backoff
const DEMO_REQUESTS = 20;
const DEMO_CONCURRENCY = 5;
const LB_KEY = "load-balancer";

// The load balancer's figures, in display order. Optional ones are shown only when present.
const METRICS = [
  { key: "requests_per_second", label: "Requests / s (last 10 s)", format: (n) => fixed(n, 1) },
  { key: "avg_response_time_ms", label: "Avg response (last 10 s)", unit: "ms", format: (n) => fixed(n, 2) },
  { key: "avg_response_time_ms_lifetime", label: "Avg response (lifetime)", unit: "ms", format: (n) => fixed(n, 2) },
  { key: "success_rate", label: "Success rate", unit: "%", format: (n) => fixed(n, 1) },
  { key: "total_requests", label: "Total requests", format: whole },
  { key: "p50_ms", label: "p50 (last 10 s)", unit: "ms", format: (n) => fixed(n, 2), optional: true },
  { key: "p95_ms", label: "p95 (last 10 s)", unit: "ms", format: (n) => fixed(n, 2), optional: true },
  { key: "p99_ms", label: "p99 (last 10 s)", unit: "ms", format: (n) => fixed(n, 2), optional: true },
  { key: "workers", label: "Workers", format: whole, optional: true },
  { key: "uptime_s", label: "Uptime", format: duration, optional: true },
  { key: "ws_connections", label: "Heartbeat sockets", format: whole, optional: true },
];

const $ = (id) => document.getElementById(id);

function fixed(n, digits) {
  return typeof n === "number" && Number.isFinite(n) ? n.toFixed(digits) : String(n);
}

function whole(n) {
  return typeof n === "number" && Number.isFinite(n) ? Math.round(n).toLocaleString("en") : String(n);
}

function duration(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds)) return String(seconds);
  const s = Math.floor(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const pad = (x) => String(x).padStart(2, "0");
  return h ? `${h}h ${pad(m)}m ${pad(s % 60)}s` : m ? `${m}m ${pad(s % 60)}s` : `${s}s`;
}

function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

// A figure of the load-balancer entry: at its top level, or one level down (for instance
// inside a "latency" object), wherever the service chose to put an added figure.
function figure(lb, key) {
  if (key in lb) return lb[key];
  for (const value of Object.values(lb)) {
    if (isObject(value) && key in value) return value[key];
  }
  return undefined;
}

function isHealthy(entry) {
  return isObject(entry) && (entry.status === "healthy" || entry.service_status === "online");
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function setBadge(node, text, kind) {
  node.textContent = text;
  node.className = `badge badge-${kind}`;
}

// ---------------------------------------------------------------------------------------
// Drawing

function drawMetrics(lb) {
  const box = $("lb-metrics");
  box.replaceChildren();
  box.classList.remove("stale");
  for (const metric of METRICS) {
    const value = figure(lb, metric.key);
    if (value === undefined && metric.optional) continue;
    const tile = el("div", "tile");
    tile.title = metric.key;
    tile.append(el("div", "label", metric.label));
    const shown = el("div", "value", value === undefined ? "—" : metric.format(value));
    if (metric.unit && value !== undefined) shown.append(el("span", "unit", metric.unit));
    tile.append(shown);
    box.append(tile);
  }
}

// "database": {"status": "healthy"} -> [["database.status", "healthy"]]
function flatten(entry, prefix = "") {
  const rows = [];
  for (const [key, value] of Object.entries(entry)) {
    const name = prefix ? `${prefix}.${key}` : key;
    if (isObject(value)) rows.push(...flatten(value, name));
    else rows.push([name, typeof value === "string" ? value : JSON.stringify(value)]);
  }
  return rows;
}

function drawServices(stats) {
  const names = Object.keys(stats).filter((name) => name !== LB_KEY);
  const box = $("services");
  box.replaceChildren();
  if (names.length === 0) box.append(el("p", "detail", "No service entries in /stats."));
  for (const name of names) {
    const entry = stats[name];
    const healthy = isHealthy(entry);
    const card = el("div", `card ${healthy ? "healthy" : "unhealthy"}`);
    const head = el("div", "card-head");
    head.append(el("span", "name", name));
    const offline = isObject(entry) && entry.service_status === "offline";
    const badge = el("span");
    setBadge(badge, healthy ? "HEALTHY" : offline ? "OFFLINE" : "UNHEALTHY", healthy ? "ok" : "bad");
    head.append(badge);
    card.append(head);
    const list = el("dl");
    for (const [key, value] of isObject(entry) ? flatten(entry) : [["value", JSON.stringify(entry)]]) {
      // A zero-width space after each "_" lets long keys wrap there rather than mid-word.
      list.append(el("dt", "", key.replaceAll("_", "_\u200b")), el("dd", "", value));
    }
    card.append(list);
    box.append(card);
  }
  return { total: names.length, healthy: names.filter((n) => isHealthy(stats[n])).length };
}

function drawSystem(lb, counts) {
  const badge = $("system-status");
  const servicesText = `${counts.healthy} of ${counts.total} services healthy`;
  if (!isObject(lb)) {
    setBadge(badge, "UNKNOWN", "unknown");
    $("system-detail").textContent = `no "${LB_KEY}" entry in /stats; ${servicesText}`;
  } else if (lb.has_real_traffic === false) {
    setBadge(badge, "IDLE", "idle");
    $("system-detail").textContent = `no API traffic or heartbeat in the last 10 s; ${servicesText}`;
  } else if (counts.healthy < counts.total || lb.status !== "healthy") {
    setBadge(badge, "DEGRADED", "bad");
    $("system-detail").textContent = servicesText;
  } else {
    setBadge(badge, "ACTIVE", "ok");
    $("system-detail").textContent = servicesText;
  }
}

function drawUnreachable(reason) {
  setBadge($("system-status"), "UNREACHABLE", "bad");
  $("system-detail").textContent = `GET /stats: ${reason}`;
  $("lb-metrics").classList.add("stale");
  for (const card of $("services").querySelectorAll(".card")) card.classList.add("stale");
}

// ---------------------------------------------------------------------------------------
// Polling /stats

let lastSuccess = null;

async function fetchStats() {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), STATS_TIMEOUT_MS);
  try {
    const response = await fetch("/stats", {
      cache: "no-store",
      headers: { Accept: "application/json" },
      signal: controller.signal,
    });
    if (!response.ok) throw new Error(`HTTP ${response.status} (unreachable)`);
    let data;
    try {
      data = await response.json();
    } catch {
      throw new Error("answer is not JSON (unreachable)");
    }
    if (!isObject(data)) throw new Error("answer is not a JSON object (unreachable)");
    return data;
  } catch (error) {
    if (error.name === "AbortError") throw new Error(`no answer within ${STATS_TIMEOUT_MS / 1000} s (unreachable)`);
    if (error instanceof TypeError) throw new Error("network error (unreachable)");
    throw error;
  } finally {
    clearTimeout(timer);
  }
}

async function poll() {
  const now = new Date().toLocaleTimeString();
  try {
    const stats = await fetchStats();
    const lb = stats[LB_KEY];
    if (isObject(lb)) drawMetrics(lb);
    drawSystem(lb, drawServices(stats));
    $("raw").textContent = JSON.stringify(stats, null, 2);
    lastSuccess = now;
    $("last-update").textContent = now;
  } catch (error) {
    drawUnreachable(error.message);
    $("last-update").textContent = `failed at ${now}` + (lastSuccess ? `; last good ${lastSuccess}` : "");
  }
}

let pollTimer = null;

async function pollLoop() {
  clearTimeout(pollTimer);
  await poll();
  pollTimer = setTimeout(pollLoop, POLL_MS);
}

// ---------------------------------------------------------------------------------------
// Heartbeat WebSocket

let reconnectDelay = RECONNECT_MIN_MS;

function connectHeartbeat() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  let socket;
  try {
    socket = new WebSocket(`${scheme}//${location.host}/api/ws-heartbeat`);
  } catch (error) {
    scheduleReconnect(`cannot open: ${error.message}`);
    return;
  }
  $("ws-status").textContent = "connecting…";
  let beat = null;
  let openedAt = 0;
  socket.addEventListener("open", () => {
    openedAt = Date.now();
    $("ws-status").textContent = "open, sending hb every 5 s";
    socket.send("hb");
    beat = setInterval(() => {
      if (socket.readyState === WebSocket.OPEN) socket.send("hb");
    }, HEARTBEAT_MS);
  });
  socket.addEventListener("close", (event) => {
    clearInterval(beat);
    if (openedAt && Date.now() - openedAt >= STABLE_SOCKET_MS) reconnectDelay = RECONNECT_MIN_MS;
    scheduleReconnect(openedAt ? `closed (code ${event.code})` : "could not connect");
  });
  // An "error" event is always followed by "close", which does the reconnecting.
}

function scheduleReconnect(why) {
  const delay = reconnectDelay;
  reconnectDelay = Math.min(reconnectDelay * 2, RECONNECT_MAX_MS);
  $("ws-status").textContent = `${why}; retrying in ${Math.round(delay / 1000)} s`;
  setTimeout(connectHeartbeat, delay + Math.random() * 250);
}

// ---------------------------------------------------------------------------------------
// Demo traffic

async function sendDemoTraffic() {
  const button = $("send-traffic");
  const result = $("traffic-result");
  button.disabled = true;
  result.textContent = "sending…";
  const started = performance.now();
  let next = 0;
  let ok = 0;
  let failed = 0;
  async function worker() {
    while (next < DEMO_REQUESTS) {
      const i = next++;
      try {
        const response = await fetch(`/api/demo?i=${i}`, {
          method: i % 4 === 3 ? "POST" : "GET",
          cache: "no-store",
          body: i % 4 === 3 ? JSON.stringify({ demo: i }) : undefined,
          headers: i % 4 === 3 ? { "Content-Type": "application/json" } : undefined,
        });
        await response.arrayBuffer();
        response.ok ? ok++ : failed++;
      } catch {
        failed++;
      }
    }
  }
  await Promise.all(Array.from({ length: DEMO_CONCURRENCY }, worker));
  const ms = Math.round(performance.now() - started);
  result.textContent = `${ok} ok, ${failed} failed in ${ms} ms`;
  button.disabled = false;
  pollLoop();
}

$("send-traffic").addEventListener("click", sendDemoTraffic);
connectHeartbeat();
pollLoop();
