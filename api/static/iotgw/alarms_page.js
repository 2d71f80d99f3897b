// The alarms page: every open alarm the user may see, live, sortable by severity or age; the rules, and a
// form that creates one (staff) through POST /api/alarm-rules.
import { Live, showConnection } from "./live.js";
import { el, frameScheduler } from "./format.js";
import { AlarmSet, alarmRow, bySeverity, refreshHeaderCount } from "./alarms.js";

const body = document.querySelector("#alarms tbody");
const none = document.getElementById("no-alarms");
const summary = document.getElementById("summary");
const open = new AlarmSet(() => { schedule(); refreshHeaderCount(); });
let sort = "severity";

const byAge = (a, b) => (a.first_seen < b.first_seen ? -1 : 1); // oldest first
const schedule = frameScheduler(() => {
  const alarms = [...open.alarms.values()].sort(sort === "severity" ? bySeverity : byAge);
  body.replaceChildren(...alarms.map((a) => alarmRow(a, { withDevice: true, onResult: (s) => open.take(s) })));
  none.hidden = alarms.length > 0;
  summary.textContent = `${alarms.length} open`;
});

for (const button of document.querySelectorAll("button.sort")) {
  button.addEventListener("click", () => {
    sort = button.dataset.sort;
    for (const b of document.querySelectorAll("button.sort")) b.setAttribute("aria-pressed", String(b === button));
    schedule();
  });
}

function onFrame(f) {
  if (f.type === "alarm") open.take(f);
}

// The socket's snapshot repeats every open alarm as an "open" frame: forget the old ones first.
const live = new Live({ devices: "*", onFrame, onState: (s) => { if (s.up) open.reset(); showConnection(document.getElementById("conn"), s); } });
live.start();
refreshHeaderCount();

function condition(r) {
  if (r.kind === "inactivity") return `silent > ${r.duration} s`;
  if (r.kind === "offline") return r.duration ? `offline > ${r.duration} s` : "offline";
  if (r.kind === "command_failed") return `${r.command || "any command"} failed or timed out`;
  const parts = [];
  if (r.high !== null) parts.push(`${r.metric} > ${r.high}` + (r.high_clear !== null ? ` (clears ≤ ${r.high_clear})` : ""));
  if (r.low !== null) parts.push(`${r.metric} < ${r.low}` + (r.low_clear !== null ? ` (clears ≥ ${r.low_clear})` : ""));
  return parts.join(" or ") + (r.duration ? ` for ${r.duration} s` : "");
}

async function loadRules() {
  const r = await fetch("/api/alarm-rules", { credentials: "same-origin" });
  if (!r.ok) return;
  const rows = (await r.json()).map((rule) => {
    const row = el("tr");
    row.dataset.rule = rule.id;
    const watches = rule.device ? `device ${rule.device}` : rule.group ? `group ${rule.group}` : "every device";
    row.append(el("td", null, rule.name + (rule.enabled ? "" : " (disabled)")), el("td", null, rule.kind),
      el("td", null, rule.severity), el("td", null, watches), el("td", null, condition(rule)), el("td"));
    return row;
  });
  document.querySelector("#rules tbody").replaceChildren(...rows);
}

const form = document.getElementById("rule-form");
if (form) {
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const note = document.getElementById("rule-note");
    const data = Object.fromEntries(new FormData(form));
    const rule = { name: data.name, kind: data.kind, severity: data.severity, metric: data.metric || "",
                   command: data.command || "", duration: Number(data.duration || 0) };
    for (const k of ["low", "low_clear", "high", "high_clear"]) rule[k] = data[k] === "" ? null : Number(data[k]);
    for (const k of ["device", "group"]) rule[k] = data[k] ? data[k] : null;
    const csrf = document.querySelector("input[name=csrfmiddlewaretoken]").value;
    const r = await fetch("/api/alarm-rules", {
      method: "POST", credentials: "same-origin", body: JSON.stringify(rule),
      headers: { "X-CSRFToken": csrf, "Content-Type": "application/json", Accept: "application/json" },
    });
    const answer = await r.json().catch(() => ({}));
    note.textContent = r.ok ? "" : (answer.error?.message ?? `HTTP ${r.status}`);
    if (r.ok) { form.reset(); loadRules(); }
  });
}
loadRules();
