// The device view: live charts with recent history, the device's state, and a command panel
// whose rows follow each command through its lifecycle. Public WebSocket and HTTP APIs only.
// Past the live window (the range buttons: 1 h … 30 d) each chart draws the aggregate endpoint's
// buckets, one per couple of pixels: the average as a line inside its min–max band.
import { Live, showConnection } from "./live.js";
import { ago, el, epoch, formatValue, frameScheduler, newer, unitOf } from "./format.js";
import { CommandPanel } from "./commands.js";
import { AlarmSet, alarmRow, bySeverity, refreshHeaderCount } from "./alarms.js";

const root = document.getElementById("device");
const deviceId = root.dataset.deviceId;
const WINDOW_S = 10 * 60; // what the charts show
const MAX_POINTS = 5000; // per metric, whatever the rate
const COLORS = ["#2563eb", "#d97706", "#059669", "#7c3aed", "#0891b2", "#db2777", "#65a30d", "#dc2626"];
const KNOWN = { temperature: "#dc2626", humidity: "#0891b2", battery: "#059669", rssi: "#7c3aed" };
// Whole seconds and up on the time axis: sub-second ticks would repeat the same label.
const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400, 2 * 86400,
  7 * 86400];

function colorOf(metric) {
  if (KNOWN[metric]) return KNOWN[metric];
  let h = 0;
  for (const c of metric) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return COLORS[h % COLORS.length];
}

const chartsBox = document.getElementById("charts");
const othersBox = document.getElementById("others");
const historyNote = document.getElementById("history-note");
const stateBadge = document.getElementById("state");
const seen = document.getElementById("seen");
const series = new Map(); // metric -> {xs, ys, chart, value, card}
const dirty = new Set();
const transportText = document.getElementById("transport");
const state = { online: false, last_seen: null, transport: null, texts: {} };
let lastSample = 0; // epoch s of the newest sample seen, to refetch what a reconnect missed

function numeric(value) {
  if (typeof value === "number" && Number.isFinite(value)) return value;
  if (typeof value === "boolean") return value ? 1 : 0;
  return null;
}

// Labels and units the device's profile, Home Assistant discovery or an operator gave its metrics (GET /api/devices/{id}).
const META = JSON.parse(document.getElementById("metric-meta")?.textContent || "{}");
const labelOf = (metric) => META[metric]?.label || metric;
const unitFor = (metric) => META[metric]?.unit || unitOf(metric);

function metricSeries(metric) {
  let s = series.get(metric);
  if (s) return s;
  const card = el("section", "card chart");
  card.dataset.metric = metric;
  const head = el("header");
  const value = el("span", "value", "—");
  const title = el("h3", null, labelOf(metric));
  if (labelOf(metric) !== metric) title.title = metric;
  head.append(title, value, el("span", "unit", unitFor(metric)));
  const plot = el("div", "plot");
  card.append(head, plot);
  s = { xs: [], ys: [], chart: null, value, card, plot, color: colorOf(metric) };
  series.set(metric, s);
  const cards = [...series.keys()].sort().map((m) => series.get(m).card);
  chartsBox.replaceChildren(...cards);
  return s;
}

function addPoint(s, x, y) {
  const { xs, ys } = s;
  const n = xs.length;
  if (n === 0 || x > xs[n - 1]) { xs.push(x); ys.push(y); return; }
  // Out of order (a late or replayed sample): binary search, replace an equal time, else insert.
  let lo = 0, hi = n;
  while (lo < hi) { const mid = (lo + hi) >> 1; if (xs[mid] < x) lo = mid + 1; else hi = mid; }
  if (xs[lo] === x) ys[lo] = y; else { xs.splice(lo, 0, x); ys.splice(lo, 0, y); }
}

/** Merge a time-ordered batch (history) into the series in one pass. */
function mergeBatch(s, bx, by) {
  const xs = [], ys = [];
  let i = 0, j = 0;
  while (i < s.xs.length || j < bx.length) {
    if (j >= bx.length || (i < s.xs.length && s.xs[i] < bx[j])) { xs.push(s.xs[i]); ys.push(s.ys[i]); i++; }
    else if (i >= s.xs.length || bx[j] < s.xs[i]) { xs.push(bx[j]); ys.push(by[j]); j++; }
    else { xs.push(s.xs[i]); ys.push(s.ys[i]); i++; j++; }
  }
  s.xs = xs; s.ys = ys;
}

function trim(s) {
  const cutoff = Date.now() / 1000 - WINDOW_S;
  let drop = 0;
  while (drop < s.xs.length - 1 && s.xs[drop] < cutoff) drop++;
  drop = Math.max(drop, s.xs.length - MAX_POINTS);
  if (drop > 0) { s.xs.splice(0, drop); s.ys.splice(0, drop); }
}

function ingest(items, batch) {
  const batches = new Map();
  for (const it of items) {
    const x = epoch(it.ts);
    if (!Number.isFinite(x)) continue;
    lastSample = Math.max(lastSample, x);
    for (const [metric, raw] of Object.entries(it.data || {})) {
      const y = numeric(raw);
      if (y === null) { state.texts[metric] = raw; dirty.add("#others"); continue; }
      const s = metricSeries(metric);
      s.last = raw;
      if (typeof raw === "boolean" && !s.bool) { s.bool = true; s.chart?.destroy(); s.chart = null; }
      if (batch) {
        if (!batches.has(s)) batches.set(s, [[], []]);
        const [bx, by] = batches.get(s);
        bx.push(x); by.push(y);
      } else addPoint(s, x, y);
      dirty.add(metric);
    }
  }
  for (const [s, [bx, by]] of batches) mergeBatch(s, bx, by);
  // Renders wait for a visible tab; memory should not.
  for (const s of series.values()) if (s.xs.length > MAX_POINTS * 1.25) trim(s);
  schedule();
}

// One line of HH:MM(:SS) under the chart (a date past two days); uPlot's two-line labels crowd a small card.
function clockLabels(u, splits) {
  const span = splits.length > 1 ? splits[splits.length - 1] - splits[0] : 0;
  if (u.scales.x.max - u.scales.x.min > 1.5 * 86400) return splits.map((v) => new Date(v * 1000).toLocaleDateString([], { month: "short", day: "numeric" }));
  const opts = { hour: "2-digit", minute: "2-digit", hour12: false, ...(span < 300 ? { second: "2-digit" } : {}) };
  return splits.map((v) => new Date(v * 1000).toLocaleTimeString([], opts));
}

// A little room around the data; a flat line gets ±1 rather than uPlot's 0…150 % guess.
function yRange(u, min, max) {
  if (min === null || max === null) return [0, 1];
  if (min === max) return [min - 1, max + 1];
  return uPlot.rangeNum(min, max, 0.1, true);
}

// Wide enough for the longest tick label (uPlot clips, e.g. the minus of "-63.5 dBm").
function axisWidth(u, values) {
  const longest = Math.max(4, ...(values || []).map((v) => String(v).length));
  return 16 + Math.ceil(longest * 7.2);
}

function makeChart(s, metric) {
  const width = Math.max(200, s.plot.clientWidth);
  const unit = unitFor(metric);
  // A boolean is drawn as steps between false (0) and true (1).
  const yLabels = s.bool
    ? (u, vals) => vals.map((v) => (v === 0 ? "false" : v === 1 ? "true" : ""))
    : (u, vals) => {
      // As many decimals as the tick step needs, so neighbouring labels never read the same.
      const step = vals.length > 1 ? Math.abs(vals[1] - vals[0]) : 1;
      const decimals = Math.min(6, Math.max(0, -Math.floor(Math.log10(step || 1))));
      return vals.map((v) => v.toFixed(decimals) + (unit ? " " + unit : ""));
    };
  return new uPlot({
    width, height: 180,
    legend: { show: false },
    cursor: { y: false, points: { size: 6 } },
    scales: { x: { time: true }, y: { range: s.bool ? [-0.15, 1.15] : yRange } },
    axes: [
      { stroke: "#64748b", grid: { stroke: "#eef1f5" }, ticks: { stroke: "#e2e8f0" }, values: clockLabels,
        incrs: TIME_STEPS, space: 70 },
      { stroke: "#64748b", grid: { stroke: "#eef1f5" }, ticks: { stroke: "#e2e8f0" }, size: axisWidth,
        values: yLabels, ...(s.bool ? { splits: () => [0, 1] } : {}) },
    ],
    series: [{}, { label: labelOf(metric), stroke: s.color, width: 2, fill: s.color + "14", points: { show: false },
      ...(s.bool ? { paths: uPlot.paths.stepped({ align: 1 }) } : {}) }],
  }, [s.xs, s.ys], s.plot);
}

// A range's chart: x, min, max, avg; the band fills between max and min, the average is the line.
function makeRangeChart(s, metric, data, xRange) {
  const width = Math.max(200, s.plot.clientWidth);
  const unit = unitFor(metric);
  return new uPlot({
    width, height: 180,
    legend: { show: false },
    cursor: { y: false, points: { size: 6 } },
    scales: { x: { time: true, range: () => xRange }, y: { range: yRange } },
    bands: [{ series: [2, 1], fill: s.color + "33" }],
    axes: [
      { stroke: "#64748b", grid: { stroke: "#eef1f5" }, ticks: { stroke: "#e2e8f0" }, values: clockLabels,
        incrs: TIME_STEPS, space: 70 },
      { stroke: "#64748b", grid: { stroke: "#eef1f5" }, ticks: { stroke: "#e2e8f0" }, size: axisWidth,
        values: (u, vals) => vals.map((v) => +v.toPrecision(6) + (unit ? " " + unit : "")) },
    ],
    series: [{}, { label: "min", stroke: s.color + "66", width: 1, points: { show: false } },
      { label: "max", stroke: s.color + "66", width: 1, points: { show: false } },
      { label: labelOf(metric), stroke: s.color, width: 2, points: { show: false } }],
  }, data, s.plot);
}

const view = { range: 0, loading: 0 }; // range: seconds shown from the aggregates; 0: the live window

async function loadRange(range) {
  const ticket = ++view.loading;
  const until = new Date();
  const since = new Date(until.getTime() - range * 1000);
  const metrics = [...series.entries()].filter(([, s]) => !s.bool).map(([m]) => m);
  rangeNote.textContent = metrics.length ? "loading…" : "no numeric metric yet";
  const t0 = performance.now();
  const results = await Promise.all(metrics.map(async (metric) => {
    const points = Math.max(100, Math.min(1000, Math.floor(series.get(metric).plot.clientWidth / 2) || 300));
    const q = new URLSearchParams({ metric, since: since.toISOString(), until: until.toISOString(), points });
    const r = await fetch(`/api/devices/${encodeURIComponent(deviceId)}/telemetry/aggregate?${q}`,
      { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    return [metric, await r.json()];
  })).catch((err) => { rangeNote.textContent = `history unavailable (${err.message})`; return null; });
  if (!results || ticket !== view.loading || view.range !== range) return;
  for (const [metric, body] of results) {
    const s = series.get(metric);
    const items = body.items;
    const data = [items.map((b) => epoch(b.ts)), items.map((b) => b.min), items.map((b) => b.max), items.map((b) => b.avg)];
    s.chart?.destroy();
    s.chart = makeRangeChart(s, metric, data, [epoch(body.since), epoch(body.until)]);
    s.card.dataset.tier = body.tier;
    s.card.dataset.buckets = String(items.length);
  }
  const bucket = results.length ? results[0][1].bucket : 0;
  rangeNote.textContent = results.length
    ? `${bucket >= 3600 ? bucket / 3600 + " h" : bucket >= 60 ? bucket / 60 + " min" : bucket + " s"} buckets, ` +
      `from the ${results[0][1].tier === "raw" ? "raw samples" : results[0][1].tier + " rollups"} ` +
      `(${Math.round(performance.now() - t0)} ms)`
    : rangeNote.textContent;
}

function showRange(range) {
  view.range = range;
  for (const b of rangeButtons.querySelectorAll("button")) b.setAttribute("aria-pressed", String(+b.dataset.range === range));
  for (const s of series.values()) { s.chart?.destroy(); s.chart = null; }
  if (range) loadRange(range);
  else { rangeNote.textContent = ""; for (const m of series.keys()) dirty.add(m); schedule(); }
}

const rangeButtons = document.getElementById("ranges");
const rangeNote = document.getElementById("range-note");
rangeButtons.addEventListener("click", (e) => {
  const b = e.target.closest("button[data-range]");
  if (b) showRange(+b.dataset.range);
});

const schedule = frameScheduler(() => {
  for (const key of dirty) {
    if (key === "#others") { renderOthers(); continue; }
    const s = series.get(key);
    if (!s) continue;
    trim(s);
    s.value.textContent = formatValue(s.last);
    if (view.range) continue; // the range's chart stays; the value above it is live
    if (!s.chart) s.chart = makeChart(s, key);
    else s.chart.setData([s.xs, s.ys]);
  }
  dirty.clear();
  renderState();
});

function renderOthers() {
  const entries = Object.entries(state.texts);
  othersBox.hidden = entries.length === 0;
  const list = othersBox.querySelector("dl");
  list.replaceChildren(...entries.flatMap(([k, v]) => [el("dt", null, labelOf(k)),
    el("dd", null, formatValue(v) + (unitFor(k) ? " " + unitFor(k) : ""))]));
}

function renderState() {
  stateBadge.textContent = state.online ? "online" : "offline";
  stateBadge.className = `badge ${state.online ? "online" : "offline"}`;
  seen.textContent = ago(state.last_seen);
  transportText.textContent = state.transport ? `over ${state.transport}` : "";
  document.getElementById("waiting").hidden = series.size > 0 || Object.keys(state.texts).length > 0;
}

async function loadHistory(sinceEpoch) {
  const since = new Date(sinceEpoch * 1000).toISOString();
  const url = `/api/devices/${encodeURIComponent(deviceId)}/telemetry?since=${encodeURIComponent(since)}&limit=${MAX_POINTS}`;
  try {
    const r = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    const body = await r.json();
    const items = Array.isArray(body) ? body : Array.isArray(body.items) ? body.items : [];
    ingest(items, true);
    historyNote.textContent = "";
  } catch (err) {
    historyNote.textContent = `history unavailable (${err.message}); showing live values only`;
  }
}

let snapshots = 0;
const commands = new CommandPanel({ deviceId, send: (frame) => live.send(frame) });

const alarmsBody = document.querySelector("#alarms tbody");
const alarms = new AlarmSet(() => { renderAlarms(); refreshHeaderCount(); });
function renderAlarms() {
  const open = alarms.of(deviceId).sort(bySeverity);
  alarmsBody.replaceChildren(...open.map((a) => alarmRow(a, { onResult: (s) => alarms.take(s) })));
  document.getElementById("no-alarms").hidden = open.length > 0;
}

function onFrame(f) {
  if (f.type === "alarm" && f.device === deviceId) {
    alarms.take(f);
    return;
  }
  if (f.type === "snapshot") {
    alarms.reset(); // its open alarms follow the snapshot as "open" frames
    renderAlarms();
    const d = f.devices.find((x) => x.id === deviceId);
    if (!d && f.more) return; // this device is in a later part of the snapshot
    document.getElementById("gone").hidden = Boolean(d);
    if (!d) return;
    Object.assign(state, { online: d.online, last_seen: d.last_seen, transport: d.transport });
    // Every numeric metric the device ever sent gets its card, for the ranges, even if silent lately.
    for (const [metric, value] of Object.entries(d.latest || {})) {
      if (typeof value !== "number" || series.has(metric)) continue;
      metricSeries(metric).last = value;
      dirty.add(metric);
    }
    // The first snapshot loads the last minutes; a later one (a reconnect) fetches what was missed.
    const since = snapshots++ === 0 || !lastSample ? Date.now() / 1000 - WINDOW_S : lastSample;
    loadHistory(since);
    if (snapshots > 1) commands.refresh();
    schedule();
  } else if (f.type === "telemetry") {
    const mine = f.items.filter((it) => it.device === deviceId);
    if (!mine.length) return;
    for (const it of mine) if (newer(it.ts, state.last_seen)) state.last_seen = it.ts;
    state.online = true;
    ingest(mine, false);
  } else if (f.type === "status" && f.device === deviceId) {
    state.online = f.online;
    schedule();
  } else if (f.type === "command" && f.device === deviceId) {
    commands.update(f);
  } else if (f.type === "error") {
    if (!commands.reject(f)) historyNote.textContent = f.message;
  }
}

window.addEventListener("resize", () => {
  for (const s of series.values()) if (s.chart) s.chart.setSize({ width: Math.max(200, s.plot.clientWidth), height: 180 });
});
setInterval(() => { seen.textContent = ago(state.last_seen); }, 1000);

const badge = document.getElementById("conn");
const live = new Live({ devices: [deviceId], onFrame, onState: (s) => { showConnection(badge, s); commands.connected(s.up); } });
live.start();
refreshHeaderCount();
