// The fleet view: every visible device, its state and latest values, live over the WebSocket API.
import { Live, showConnection } from "./live.js";
import { ago, el, formatValue, frameScheduler, newer, unitOf } from "./format.js";
import { AlarmSet, bySeverity, refreshHeaderCount, severityBadge } from "./alarms.js";

const alarms = new AlarmSet((a) => { dirty.add(a.device); schedule(); refreshHeaderCount(); });

const body = document.querySelector("#fleet tbody");
const empty = document.getElementById("empty");
const summary = document.getElementById("summary");
const filter = document.getElementById("filter");
const devices = new Map(); // id -> {state, row, cells}
const dirty = new Set();
let needSort = false;
const collator = new Intl.Collator(undefined, { numeric: true });

function device(id, state) {
  let d = devices.get(id);
  if (!d) {
    const row = el("tr");
    row.dataset.device = id;
    const link = el("a", "name", state.name || id);
    link.href = `/devices/${encodeURIComponent(id)}/`;
    const nameCell = el("td");
    nameCell.append(link, el("div", "id", id));
    const cells = { state: el("td"), alarms: el("td", "alarms"), seen: el("td", "seen"), transport: el("td", "transport"), latest: el("div", "chips") };
    const latestCell = el("td", "latest");
    latestCell.append(cells.latest);
    row.append(nameCell, cells.state, cells.alarms, cells.seen, cells.transport, latestCell);
    row.addEventListener("click", (ev) => { if (ev.target.tagName !== "A") location.href = link.href; });
    d = { state, row, cells, link };
    devices.set(id, d);
    needSort = true;
  } else {
    Object.assign(d.state, state);
    d.link.textContent = d.state.name || id;
  }
  dirty.add(id);
  return d;
}

function renderRow(d) {
  const { state, cells } = d;
  cells.state.replaceChildren(el("span", `badge ${state.online ? "online" : "offline"}`, state.online ? "online" : "offline"));
  const open = alarms.of(d.state.id || d.row.dataset.device).sort(bySeverity);
  cells.alarms.replaceChildren(...(open.length ? [severityBadge(open[0].severity), el("span", "n", ` ${open.length}`)] : []));
  cells.alarms.title = open.map((a) => `${a.severity}: ${a.rule_name} (${a.state})`).join("\n");
  cells.seen.textContent = ago(state.last_seen);
  cells.seen.title = state.last_seen ? new Date(state.last_seen).toLocaleString() : "";
  cells.transport.textContent = state.transport || "—";
  const shown = d.shown || (d.shown = {});
  const chips = Object.entries(state.latest || {}).sort(([a], [b]) => (a < b ? -1 : 1)).map(([metric, value]) => {
    // A value that just changed flashes once: the row visibly breathes with its device.
    const chip = el("span", metric in shown && shown[metric] !== value ? "chip changed" : "chip");
    shown[metric] = value;
    chip.dataset.metric = metric;
    const text = formatValue(value);
    const v = el("span", "v", text);
    if (text.length > 24) v.title = text; // long strings are cut short in the chip; the whole of it on hover
    chip.append(el("span", "k", metric), v, el("span", "u", unitOf(metric)));
    return chip;
  });
  cells.latest.replaceChildren(...chips);
}

const schedule = frameScheduler(() => {
  for (const id of dirty) {
    const d = devices.get(id);
    if (d) renderRow(d);
  }
  dirty.clear();
  if (needSort) sortDevices();
  const all = [...devices.values()];
  const order = all.map((d) => d.row);
  if (body.children.length !== order.length || order.some((row, i) => body.children[i] !== row)) {
    body.replaceChildren(...order);
  }
  applyFilter();
  const online = all.filter((d) => d.state.online).length;
  summary.textContent = `${all.length} device${all.length === 1 ? "" : "s"} · ${online} online`;
  empty.hidden = all.length > 0;
});

function applyFilter() {
  const q = filter.value.trim().toLowerCase();
  for (const [id, d] of devices) {
    d.row.hidden = q !== "" && !id.toLowerCase().includes(q) && !(d.state.name || "").toLowerCase().includes(q);
  }
}

let snapshotIds = new Set();

function onFrame(f) {
  if (f.type === "alarm") {
    alarms.take(f);
    return;
  }
  if (f.type === "snapshot") {
    if (snapshotIds.size === 0) alarms.reset(); // the open alarms follow the snapshot as "open" frames
    // A large fleet's snapshot comes in parts (`more: true` on all but the last); prune after the last.
    f.devices.forEach((s) => { snapshotIds.add(s.id); device(s.id, { ...s, latest: { ...s.latest } }); });
    if (!f.more) {
      for (const id of [...devices.keys()]) if (!snapshotIds.has(id)) devices.delete(id);
      snapshotIds = new Set();
    }
  } else if (f.type === "telemetry") {
    for (const it of f.items) {
      const d = devices.get(it.device) || device(it.device, { id: it.device, latest: {} });
      Object.assign(d.state.latest, it.data);
      if (newer(it.ts, d.state.last_seen)) d.state.last_seen = it.ts;
      d.state.online = true;
      dirty.add(it.device);
    }
  } else if (f.type === "status") {
    const d = devices.get(f.device);
    if (d) { d.state.online = f.online; dirty.add(f.device); }
  } else {
    return;
  }
  schedule();
}

function sortDevices() {
  // Natural order: sim-2 before sim-10.
  const sorted = [...devices.entries()].sort(([a], [b]) => collator.compare(a, b));
  devices.clear();
  sorted.forEach(([id, d]) => devices.set(id, d));
  needSort = false;
}

filter.addEventListener("input", applyFilter);
// "12 s ago" ages even when nothing arrives.
setInterval(() => { for (const d of devices.values()) d.cells.seen.textContent = ago(d.state.last_seen); }, 1000);

const badge = document.getElementById("conn");
new Live({ devices: "*", onFrame, onState: (s) => showConnection(badge, s) }).start();
refreshHeaderCount();
