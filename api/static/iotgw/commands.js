// The command panel: send commands over the WebSocket and follow each one through its lifecycle (SPEC §6).
import { el, formatValue } from "./format.js";

// A frame never moves a row backwards: delivery to dashboards is best-effort and may reorder.
const RANK = { sending: 0, queued: 1, sent: 2, succeeded: 3, failed: 3, timed_out: 3, expired: 3, cancelled: 3, rejected: 3 };
const FINAL = new Set(["succeeded", "failed", "timed_out", "expired", "cancelled", "rejected"]);
const MAX_ROWS = 50;

function time(ts) {
  const d = ts ? new Date(ts) : new Date();
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0").slice(0, 1);
}

export class CommandPanel {
  constructor({ deviceId, send }) {
    this.deviceId = deviceId;
    this.send = send;
    this.rows = new Map(); // ref or id -> row
    this.form = document.getElementById("command-form");
    this.body = document.querySelector("#commands tbody");
    this.note = document.getElementById("command-note");
    this.form.addEventListener("submit", (ev) => { ev.preventDefault(); this.submit(); });
    document.querySelectorAll("[data-preset]").forEach((b) => b.addEventListener("click", () => {
      this.form.elements.name.value = b.dataset.preset;
      this.form.elements.params.value = b.dataset.params || "{}";
    }));
  }

  connected(up) {
    this.form.querySelector("button[type=submit]").disabled = !up;
    this.note.textContent = up ? "" : "Not connected: commands can be sent again once the dashboard is live.";
  }

  submit() {
    const f = this.form.elements;
    let params;
    try {
      params = JSON.parse(f.params.value.trim() || "{}");
      if (typeof params !== "object" || params === null || Array.isArray(params)) throw new Error();
    } catch {
      this.note.textContent = "Parameters must be a JSON object, e.g. {\"value\": 21.5}.";
      f.params.focus();
      return;
    }
    const name = f.name.value.trim();
    if (!name) { f.name.focus(); return; }
    const timeout = Number(f.timeout.value) || 30;
    const ref = "ui-" + Math.random().toString(36).slice(2, 10);
    const row = this.row(ref, { name, params, status: "sending", ref });
    this.note.textContent = "";
    if (!this.send({ type: "command", device: this.deviceId, name, params, timeout, ref })) {
      this.apply(row, { status: "rejected", error: "not connected" });
    }
  }

  row(key, cmd) {
    let r = this.rows.get(key);
    if (r) return r;
    const tr = el("tr");
    tr.dataset.ref = cmd.ref || "";
    const cells = {
      at: el("td", "at", time(cmd.updated_at)),
      what: el("td", "what"),
      status: el("td", "status"),
      outcome: el("div", "outcome"),
    };
    cells.what.append(el("code", "name", cmd.name || "?"));
    const params = cmd.params && Object.keys(cmd.params).length ? JSON.stringify(cmd.params) : "";
    if (params) cells.what.append(el("span", "params", params.length > 80 ? params.slice(0, 79) + "…" : params));
    cells.what.append(cells.outcome);
    tr.append(cells.at, cells.what, cells.status);
    r = { tr, cells, status: null, trail: [], id: null, ref: cmd.ref };
    this.rows.set(key, r);
    this.body.prepend(tr);
    while (this.body.children.length > MAX_ROWS) this.body.lastElementChild.remove();
    document.getElementById("no-commands").hidden = true;
    this.apply(r, cmd);
    return r;
  }

  apply(r, cmd) {
    if (cmd.id && !r.id) { r.id = cmd.id; this.rows.set(cmd.id, r); r.tr.dataset.id = cmd.id; }
    const status = cmd.status;
    if (status && (r.status === null || RANK[status] > (RANK[r.status] ?? -1))) {
      r.status = status;
      r.trail.push([status, cmd.updated_at]);
      r.tr.dataset.status = status;
      const steps = r.trail.map(([s, at]) => {
        const step = el("span", `step ${s}`, s.replace("_", " "));
        step.title = at ? new Date(at).toLocaleString() : "";
        return step;
      });
      const badge = el("span", `badge ${status}`, status.replace("_", " "));
      const trail = el("div", "trail");
      steps.forEach((s, i) => trail.append(...(i ? [el("span", "arrow", "→"), s] : [s])));
      r.cells.status.replaceChildren(badge, ...(steps.length > 1 ? [trail] : []));
      r.tr.classList.toggle("final", FINAL.has(status));
    }
    if (cmd.error) r.cells.outcome.replaceChildren(el("span", "error", String(cmd.error)));
    else if (cmd.result !== undefined && cmd.result !== null) {
      const text = typeof cmd.result === "object" ? JSON.stringify(cmd.result) : formatValue(cmd.result);
      r.cells.outcome.replaceChildren(el("code", null, text.length > 200 ? text.slice(0, 199) + "…" : text));
    }
  }

  /** A `command` frame: this page's own (by ref, then id) or someone else's. */
  update(frame) {
    const r = (frame.id && this.rows.get(frame.id)) || (frame.ref && this.rows.get(frame.ref));
    if (r) this.apply(r, frame);
    else this.row(frame.id || frame.ref, frame);
  }

  /** An `error` frame answering one of our commands; false if it is not ours. */
  reject(frame) {
    const r = frame.ref && this.rows.get(frame.ref);
    if (!r) return false;
    this.apply(r, { status: "rejected", error: frame.message || frame.code });
    return true;
  }

  /** After a reconnect: frames may have been missed, so ask the HTTP API about unfinished commands. */
  async refresh() {
    const open = new Set([...this.rows.values()].filter((r) => r.id && !FINAL.has(r.status)));
    for (const r of open) {
      try {
        const resp = await fetch(`/api/commands/${encodeURIComponent(r.id)}`, { credentials: "same-origin" });
        if (resp.ok) this.apply(r, await resp.json());
      } catch { /* the next frame will tell */ }
    }
  }
}
