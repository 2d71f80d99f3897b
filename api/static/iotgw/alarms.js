// Alarms on the pages: `alarm` frames kept by id, rows with acknowledge and clear buttons, the header count.
// Only the public APIs: the dashboard WebSocket's `alarm` frames and POST /api/alarms/{id}/acknowledge|clear.
import { ago, el } from "./format.js";

export const SEVERITIES = ["critical", "major", "minor", "warning", "info"];
const RANK = Object.fromEntries(SEVERITIES.map((s, i) => [s, i]));

function csrf() {
  const input = document.querySelector("input[name=csrfmiddlewaretoken]");
  return input ? input.value : "";
}

/** POST an action (acknowledge, clear) with a note; the alarm's new state, or throws with the API's message. */
export async function act(alarmId, action, note = "") {
  const r = await fetch(`/api/alarms/${alarmId}/${action}`, {
    method: "POST", credentials: "same-origin",
    headers: { "X-CSRFToken": csrf(), "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify({ note }),
  });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error?.message ?? `HTTP ${r.status}`);
  return body;
}

/** The open alarms a page knows of, from `alarm` frames (and the snapshot's "open" ones). */
export class AlarmSet {
  constructor(onChange) {
    this.alarms = new Map(); // id -> state
    this.onChange = onChange || (() => {});
  }

  /** Take an `alarm` frame or an API answer; true when it changed what is open. */
  take(a) {
    if (a.state === "cleared") {
      if (!this.alarms.delete(a.id)) return false;
    } else {
      this.alarms.set(a.id, a);
    }
    this.onChange(a);
    return true;
  }

  /** A fresh snapshot is coming: forget what it will repeat (alarms cleared meanwhile vanish). */
  reset() { this.alarms.clear(); }

  of(deviceId) { return [...this.alarms.values()].filter((a) => a.device === deviceId); }

  get size() { return this.alarms.size; }
}

/** Most severe first, then oldest first. */
export function bySeverity(a, b) {
  return (RANK[a.severity] ?? 9) - (RANK[b.severity] ?? 9) || (a.first_seen < b.first_seen ? -1 : 1);
}

export function severityBadge(severity) {
  return el("span", `badge sev-${severity}`, severity);
}

/** A table row for an open alarm, with its actions; `withDevice` adds the device column. */
export function alarmRow(a, { withDevice = false, onResult = () => {} } = {}) {
  const row = el("tr");
  row.dataset.alarm = a.id;
  row.dataset.state = a.state;
  const cells = [el("td"), el("td"), el("td"), el("td"), el("td", "actions")];
  cells[0].append(severityBadge(a.severity));
  const what = el("div", "alarm-name", a.rule_name);
  cells[1].append(what, el("div", "muted small", a.message || ""));
  cells[2].append(el("span", "seen", ago(a.first_seen)));
  cells[2].title = new Date(a.first_seen).toLocaleString();
  if (a.retriggers) cells[2].append(el("div", "muted small", `retriggered ×${a.retriggers}`));
  cells[3].append(el("span", `badge ${a.state}`, a.state));
  if (a.state === "acknowledged") {
    cells[3].append(el("div", "muted small ack-by", `by ${a.acknowledged_by || "?"}${a.ack_note ? ": " + a.ack_note : ""}`));
  }
  const note = el("input", "note");
  note.placeholder = "note";
  note.maxLength = 1000;
  note.setAttribute("aria-label", "note");
  const ack = el("button", "ack", "Acknowledge");
  ack.type = "button";
  ack.disabled = a.state !== "active";
  const clear = el("button", "clear", "Clear");
  clear.type = "button";
  const message = el("div", "error small");
  for (const [button, action] of [[ack, "acknowledge"], [clear, "clear"]]) {
    button.addEventListener("click", async (ev) => {
      ev.stopPropagation();
      button.disabled = true;
      message.textContent = "";
      try {
        onResult(await act(a.id, action, note.value));
      } catch (err) {
        message.textContent = String(err.message || err);
        button.disabled = false;
      }
    });
  }
  cells[4].append(note, ack, clear, message);
  if (withDevice) {
    const cell = el("td");
    const link = el("a", null, a.device);
    link.href = `/devices/${encodeURIComponent(a.device)}/`;
    cell.append(link);
    cells.splice(1, 0, cell);
  }
  row.append(...cells);
  return row;
}

let counting = null;

/** The header's count of open alarms the user may see (re-read after any alarm frame, at most once a second). */
export function refreshHeaderCount() {
  const link = document.getElementById("alarm-count");
  if (!link || counting) return;
  counting = setTimeout(async () => {
    counting = null;
    try {
      const r = await fetch("/api/alarms?state=open&limit=1000", { credentials: "same-origin" });
      if (!r.ok) return;
      const body = await r.json();
      const n = body.items.length + (body.next ? "+" : "");
      link.querySelector(".n").textContent = n;
      link.classList.toggle("firing", body.items.length > 0);
    } catch { /* the gateway is away: the count stays */ }
  }, 300);
}
