// The status page: polls /lb-status/data every 2 s and draws it. No library, no network
// access beyond this origin (the page's Content-Security-Policy forbids any), every text set
// through textContent so that nothing an upstream says can become markup.
"use strict";

const POLL_MS = 2000;
const SVG_NS = "http://www.w3.org/2000/svg";

// The headline tiles: /stats' load-balancer keys, shown exactly as /stats has them.
const FIGURES = [
  ["total_requests", "requests (total)", ""],
  ["requests_per_second", "real API req/s", "/s"],
  ["avg_response_time_ms", "avg (window)", "ms"],
  ["p50_ms", "p50 (window)", "ms"],
  ["p95_ms", "p95 (window)", "ms"],
  ["p99_ms", "p99 (window)", "ms"],
  ["success_rate", "success rate (total)", "%"],
  ["real_requests_total", "real API requests", ""],
  ["avg_response_time_ms_lifetime", "avg (total)", "ms"],
  ["proxy_errors.502", "proxy 502s", ""],
  ["proxy_errors.504", "proxy 504s", ""],
  ["responses_by_class.2xx", "2xx", ""],
  ["responses_by_class.3xx", "3xx", ""],
  ["responses_by_class.4xx", "4xx", ""],
  ["responses_by_class.5xx", "5xx", ""],
  ["workers", "workers", ""],
  ["ws_connections", "heartbeat sockets", ""],
  ["uptime_s", "uptime", "", formatDuration],
];

// Seconds as a person reads them: 17 s, 4 min 12 s, 3 h 05 min, 2 d 4 h.
function formatDuration(seconds) {
  const s = Math.floor(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

// Per target: [column title, key in /stats' target entry].
const TARGET_COLUMNS = [
  ["target", "url"], ["from name", "name"], ["weight", "weight"], ["state", "state"], ["health check", "health_check"],
  ["ejections", "ejections"], ["ejected for s", "ejected_for_s"],
  ["in flight", "outstanding"], ["requests", "requests"], ["failures", "failures"],
  ["window req", "window_requests"], ["avg ms", "window_avg_ms"],
  ["p50 ms", "window_p50_ms"], ["p95 ms", "window_p95_ms"], ["p99 ms", "window_p99_ms"],
];

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function svgEl(tag, attrs, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function pick(entry, path) {
  return path.split(".").reduce((value, key) => (value == null ? value : value[key]), entry);
}

const FORMATS = new Map(FIGURES.filter((f) => f[3]).map(([key, , , format]) => [key, format]));

function buildTiles() {
  const tiles = document.getElementById("figures");
  for (const [key, label, unit] of FIGURES) {
    const tile = el("div", { class: "tile" });
    tile.append(el("div", { class: "label" }, label));
    const line = el("div");
    line.append(el("span", { class: "value", "data-figure": key }, "–"));
    if (unit) line.append(el("span", { class: "unit" }, unit));
    tile.append(line);
    tiles.append(tile);
  }
}

function drawFigures(lb) {
  for (const node of document.querySelectorAll("[data-figure]")) {
    const value = pick(lb, node.dataset.figure);
    const format = FORMATS.get(node.dataset.figure) || String;
    node.textContent = value == null ? "–" : format(value);
  }
}

function healthText(check) {
  if (!check) return "off";
  const age = check.last_check_s_ago == null ? "never" : `${check.last_check_s_ago} s ago`;
  return `${check.verdict} (${check.passes_in_row} ok / ${check.failures_in_row} failed in a row, ${age})`;
}

// A table that scrolls inside its card if it must (a narrow screen).
function wrapped(table) {
  const wrap = el("div", { class: "table-wrap" });
  wrap.append(table);
  return wrap;
}

// One line per ;resolve entry of a pool: the name, what it resolves to now, and how fresh.
function discoveryLine(entry) {
  const age = entry.refreshed_s_ago == null ? "not answered yet" : `answered ${entry.refreshed_s_ago} s ago`;
  const ttl = entry.ttl_s == null ? "" : `, ttl ${entry.ttl_s} s`;
  const error = entry.error ? ` — last lookup: ${entry.error}` : "";
  const addresses = entry.addresses.length ? entry.addresses.join(", ") : "no address";
  return el("p", { class: "detail", "data-discovery": entry.name },
    `DNS ${entry.name}: ${addresses} (${age}${ttl})${error}`);
}

function drawPools(upstreams, byRoute) {
  const root = document.getElementById("pools");
  const pools = Object.entries(upstreams || {});
  root.replaceChildren();
  if (!pools.length) root.append(el("p", { class: "detail" }, "No pools."));
  for (const [name, pool] of pools) {
    const box = el("div", { class: "pool", "data-pool": name });
    const head = el("div", { class: "pool-head" });
    head.append(el("h3", {}, name), el("span", { class: "detail" }, `balance ${pool.balance}`));
    if (pool.panic) head.append(el("span", { class: "badge badge-panic", "data-panic": "" }, "PANIC: no live target"));
    const classes = byRoute[name] || {};
    const counts = Object.entries(classes).map(([cls, n]) => `${cls} ${n}`).join(" · ");
    head.append(el("span", { class: "detail", "data-field": "responses" }, `responses: ${counts}`));
    box.append(head);
    for (const entry of pool.discovery || []) box.append(discoveryLine(entry));

    const table = el("table");
    const header = el("tr");
    for (const [title, key] of TARGET_COLUMNS) header.append(el("th", { "data-field": key }, title));
    const thead = el("thead");
    thead.append(header);
    table.append(thead);
    const body = el("tbody");
    for (const target of pool.targets) {
      const row = el("tr", { "data-target": target.url });
      for (const [, key] of TARGET_COLUMNS) {
        const cell = el("td", { "data-field": key });
        if (key === "state") {
          cell.append(el("span", { class: `badge state-${target.state}` }, target.state));
        } else if (key === "health_check") {
          cell.className = "wraps";
          cell.textContent = healthText(target.health_check);
        } else {
          cell.textContent = target[key] == null ? "–" : String(target[key]);
        }
        row.append(cell);
      }
      body.append(row);
    }
    table.append(body);
    box.append(wrapped(table));
    root.append(box);
  }
}

// Per rate limit: [column title, key in /stats' limits.rate entry].
const LIMIT_COLUMNS = [
  ["limit", "name"], ["rate", "rate"], ["burst", "burst"], ["per", "per"], ["mode", "dry_run"],
  ["admitted (window)", "admitted_in_window"], ["limited (window)", "limited_in_window"],
  ["admitted", "admitted"], ["limited", "limited"], ["limited now", "limited_keys"],
];

function drawLimits(limits) {
  const root = document.getElementById("limits");
  root.replaceChildren();
  if (!limits) return;
  const head = el("div", { class: "pool-head" });
  const cluster = limits.cluster;
  if (cluster) {
    const degraded = cluster.mode === "share";
    head.append(el("span", { class: `badge ${degraded ? "badge-panic" : "state-up"}`, "data-cluster": cluster.mode },
      degraded ? `SHARE ${cluster.share} (Redis: ${cluster.reason || "down"})` : `cluster of ${cluster.replicas}`));
  }
  const pools = Object.entries(limits.pools || {}).filter(([, p]) => p.max_requests);
  const capped = pools.map(([name, p]) => `${name} ${p.in_flight}/${p.max_requests} in flight, ${p.overloaded} overloaded`);
  if (capped.length) head.append(el("span", { class: "detail" }, `max_requests: ${capped.join(" · ")}`));
  const client = limits.max_client_requests;
  if (client && client.max) head.append(el("span", { class: "detail" }, `per client in flight: ${client.max} (${client.limited} refused)`));
  if (limits.trusted_proxies && limits.trusted_proxies.length) {
    head.append(el("span", { class: "detail" }, `trusted proxies: ${limits.trusted_proxies.join(", ")}`));
  }
  root.append(head);
  const rates = Object.entries(limits.rate || {});
  if (!rates.length) {
    root.append(el("p", { class: "detail" }, "No rate limit configured."));
    return;
  }
  const table = el("table");
  const header = el("tr");
  for (const [title] of LIMIT_COLUMNS) header.append(el("th", {}, title));
  const thead = el("thead");
  thead.append(header);
  table.append(thead);
  const body = el("tbody");
  for (const [name, limit] of rates) {
    const row = el("tr", { "data-limit": name });
    for (const [, key] of LIMIT_COLUMNS) {
      const cell = el("td", { "data-field": key });
      if (key === "name") cell.textContent = name;
      else if (key === "dry_run") cell.textContent = limit.dry_run ? "dry run" : "enforced";
      else if (key === "limited_keys") {
        cell.textContent = (limit.limited_keys || []).map((k) => `${k.key} (${k.limited})`).join(", ") || "–";
      } else cell.textContent = limit[key] == null ? "–" : String(limit[key]);
      row.append(cell);
    }
    body.append(row);
  }
  table.append(body);
  root.append(wrapped(table));
}

// load-balancer.routes: each route (in the order tried), its match, its backends' weights
// and requests; one row per backend.
const ROUTE_COLUMNS = ["prefix", "match", "upstream", "weight", "share", "requests"];

function matchText(match) {
  if (!match) return "–";
  return Object.entries(match).map(([key, value]) => (Array.isArray(value)
    ? `${key} ${value.join("|")}`
    : `${key} ${Object.entries(value).map(([name, v]) => `${name}=${v}`).join(" ")}`)).join(" · ");
}

function drawRoutes(routes) {
  const root = document.getElementById("routes");
  root.replaceChildren();
  if (!routes) return;
  const table = el("table");
  const header = el("tr");
  for (const title of ROUTE_COLUMNS) header.append(el("th", {}, title));
  const thead = el("thead");
  thead.append(header);
  table.append(thead);
  const body = el("tbody");
  routes.forEach((route, position) => {
    const total = route.backends.reduce((sum, b) => sum + b.weight, 0);
    route.backends.forEach((backend, index) => {
      const row = el("tr", { "data-route": String(position), "data-backend": backend.upstream });
      const share = total ? `${Math.round((1000 * backend.weight) / total) / 10} %` : "–";
      const values = {
        prefix: index ? "" : route.prefix, match: index ? "" : matchText(route.match),
        upstream: backend.upstream, weight: backend.weight, share,
        requests: backend.requests == null ? "–" : backend.requests,
      };
      for (const key of ROUTE_COLUMNS) {
        const cell = el("td", { "data-field": key }, values[key]);
        if (key === "match") cell.className = "wraps";
        row.append(cell);
      }
      body.append(row);
    });
  });
  table.append(body);
  root.append(wrapped(table));
}

function drawLimitsHistory(points, history, now) {
  const step = history ? history.resolution_s : 5;
  const span = history ? history.span_s : 900;
  const end = Math.floor(now / step) * step;
  const start = end - span;
  const byTime = new Map((points || []).map((p) => [p.t, p]));
  const times = [];
  for (let t = start; t < end; t += step) times.push(t);
  const series = (key) => times.map((t) => [t + step / 2, byTime.has(t) ? byTime.get(t)[key] : 0]);
  drawChart(document.getElementById("chart-limited"),
    [series("limited_per_s"), series("dry_run_per_s"), series("overloaded_per_s")], start, end,
    (points || []).length, "nothing refused in the last 15 minutes");
}

function drawServices(services) {
  const list = document.getElementById("services");
  list.replaceChildren();
  for (const [key, service] of Object.entries(services || {})) {
    const item = el("li", { "data-service": key });
    item.append(el("span", { class: `badge ${service.online ? "state-up" : "state-down"}` },
      service.online ? "online" : "offline"), document.createTextNode(` ${key}`));
    if (service.error) item.append(el("span", { class: "detail" }, ` ${service.error}`));
    list.append(item);
  }
}

// ---------------------------------------------------------------- charts (hand-made SVG)

const W = 600, H = 180, LEFT = 44, RIGHT = 8, TOP = 8, BOTTOM = 20;

function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (value <= step * power) return step * power;
  return 10 * power;
}

function label(value) {
  return value >= 100 ? String(Math.round(value)) : String(Number(value.toPrecision(3)));
}

// series: [[ [t, value|null], ... ], ...]; a null value breaks the line.
function drawChart(svg, series, start, end, points, empty = "no traffic in the last 15 minutes") {
  svg.replaceChildren();
  svg.dataset.points = String(points);
  const values = series.flat().map(([, v]) => v).filter((v) => v != null);
  const top = niceMax(Math.max(0, ...values));
  const x = (t) => LEFT + ((t - start) / (end - start)) * (W - LEFT - RIGHT);
  const y = (v) => TOP + (1 - v / top) * (H - TOP - BOTTOM);
  for (const fraction of [0, 0.5, 1]) {
    const value = top * fraction;
    svg.append(svgEl("line", { class: "grid", x1: LEFT, x2: W - RIGHT, y1: y(value), y2: y(value) }));
    svg.append(svgEl("text", { class: "axis", x: LEFT - 4, y: y(value) + 4, "text-anchor": "end" }, label(value)));
  }
  for (const minutes of [15, 10, 5, 0]) {
    const t = end - minutes * 60;
    const anchor = minutes === 15 ? "start" : minutes === 0 ? "end" : "middle";
    svg.append(svgEl("text", { class: "axis", x: x(t), y: H - 4, "text-anchor": anchor },
      minutes ? `-${minutes} min` : "now"));
  }
  if (!points) {
    svg.append(svgEl("text", { class: "empty", x: W / 2, y: H / 2, "text-anchor": "middle" },
      empty));
    return;
  }
  series.forEach((line, index) => {
    let d = "", pen = "M";
    for (const [t, v] of line) {
      if (v == null) { pen = "M"; continue; }
      d += `${pen}${x(t).toFixed(1)},${y(v).toFixed(1)} `;
      pen = "L";
    }
    if (d) svg.append(svgEl("path", { class: `series s${index}`, d: d.trim(), "data-series": String(index) }));
  });
}

function drawHistory(history, now) {
  if (!history) return;
  const step = history.resolution_s;
  const end = Math.floor(now / step) * step; // the start of the bucket still filling
  const start = end - history.span_s;
  const byTime = new Map(history.buckets.map((b) => [b.t, b]));
  // Counts are dense (a span with no bucket had no traffic: zero); latency only where measured.
  const times = [];
  for (let t = start; t < end; t += step) times.push(t);
  const count = (key) => times.map((t) => [t + step / 2, byTime.has(t) ? byTime.get(t)[key] : 0]);
  const measured = (key) => times.map((t) => [t + step / 2, byTime.has(t) ? byTime.get(t)[key] : null]);
  const points = history.buckets.length;
  drawChart(document.getElementById("chart-rps"),
    [count("requests_per_second"), count("real_requests_per_second")], start, end, points);
  drawChart(document.getElementById("chart-latency"),
    [measured("p50_ms"), measured("p95_ms"), measured("p99_ms")], start, end, points);
  drawChart(document.getElementById("chart-errors"),
    [count("error_rate"), count("real_failure_rate")], start, end, points);
}

// The served TLS certificate (/stats' load-balancer.tls), when there is one.
function drawTls(tls) {
  const line = document.getElementById("tls");
  line.hidden = !tls;
  if (!tls) return;
  const days = (tls.expires_in_s / 86400).toFixed(1);
  let text = `TLS certificate: ${tls.subject}, expires ${tls.not_after} (in ${days} days)`;
  if (tls.refused) text += `; new files refused: ${tls.refused}`;
  line.textContent = text;
}

// ---------------------------------------------------------------- polling

function setFreshness(live, text) {
  const badge = document.getElementById("freshness");
  badge.className = `badge ${live ? "badge-live" : "badge-stale"}`;
  badge.textContent = text;
}

// load-balancer.config: the generation this worker runs, and why the last reload failed.
function drawConfig(config) {
  const summary = document.querySelector('[data-config="summary"]');
  const error = document.querySelector('[data-config="error"]');
  if (!config) {
    summary.textContent = "–";
    error.hidden = true;
    return;
  }
  const pending = config.pending_restart.length ? `; needs a restart: ${config.pending_restart.join(", ")}` : "";
  summary.textContent = `generation ${config.generation}, loaded ${config.loaded_at}, sha256 ${config.sha256.slice(0, 12)} ` +
    `(${config.reloads.applied} reload(s) applied, ${config.reloads.failed} failed${config.watch ? ", watching the file" : ""})${pending}`;
  error.hidden = !config.last_error;
  error.textContent = config.last_error ? `last reload failed: ${config.last_error}` : "";
}

async function poll() {
  try {
    const response = await fetch("/lb-status/data", { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const data = await response.json();
    const lb = data["load-balancer"];
    drawFigures(lb);
    drawTls(lb.tls);
    drawConfig(lb.config);
    drawRoutes(lb.routes);
    drawPools(lb.upstreams, data.responses_by_route || {});
    drawServices(data.services);
    drawHistory(data.history, data.generated_at);
    drawLimits(lb.limits);
    drawLimitsHistory(data.limits_history, data.history, data.generated_at);
    document.getElementById("updated").textContent = new Date(data.generated_at * 1000).toLocaleTimeString();
    document.body.dataset.polls = String(Number(document.body.dataset.polls || 0) + 1);
    setFreshness(true, "LIVE");
  } catch (error) {
    setFreshness(false, `STALE: ${error.message}`);
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

buildTiles();
poll();
