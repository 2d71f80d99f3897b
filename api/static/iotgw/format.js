// Small helpers shared by the pages: DOM building with text only, and value formatting.

/** An element with a class and text; text goes through textContent, never HTML. */
export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

const UNITS = [
  [/temp/i, "°C"], [/humid/i, "%"], [/batt/i, "%"], [/rssi/i, "dBm"], [/volt/i, "V"],
  [/press/i, "hPa"], [/co2/i, "ppm"], [/power/i, "W"],
];

/** A unit guessed from a metric's name, or "". */
export function unitOf(metric) {
  const hit = UNITS.find(([re]) => re.test(metric));
  return hit ? hit[1] : "";
}

/** A value as an operator reads it: numbers rounded, booleans and null spelled out. */
export function formatValue(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "number") {
    if (Number.isInteger(value)) return String(value);
    const abs = Math.abs(value);
    return value.toFixed(abs >= 100 ? 1 : abs >= 1 ? 2 : 3).replace(/\.?0+$/, "");
  }
  if (typeof value === "boolean") return value ? "true" : "false";
  return String(value);
}

/** Seconds since the epoch of an ISO-8601 time. */
export function epoch(ts) {
  return Date.parse(ts) / 1000;
}

/** True when ISO time `a` is later than `b` (or `b` is unset); compared as times, not text. */
export function newer(a, b) {
  return !b || Date.parse(a) > Date.parse(b);
}

/** "just now", "12 s ago", "3 min ago", or a date. */
export function ago(ts, now = Date.now()) {
  if (!ts) return "never";
  const s = Math.max(0, Math.round((now - Date.parse(ts)) / 1000));
  if (s < 3) return "just now";
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(ts).toLocaleString();
}

/** Calls `render` at most once per animation frame, however often `schedule` is called. */
export function frameScheduler(render) {
  let pending = false;
  return function schedule() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; render(); });
  };
}
