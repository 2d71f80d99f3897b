// The dashboard WebSocket (SPEC §7): connects, subscribes, reconnects with backoff and re-subscribes,
// so every (re)connect starts from a fresh snapshot.

const MIN_DELAY = 1000;
const MAX_DELAY = 15000;

export class Live {
  /** devices: a list of ids or "*"; onFrame(frame); onState({up, retryIn}). */
  constructor({ devices, onFrame, onState }) {
    this.devices = devices;
    this.onFrame = onFrame;
    this.onState = onState || (() => {});
    this.delay = MIN_DELAY;
    this.ws = null;
    this.pinger = null;
  }

  start() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const ws = new WebSocket(scheme + location.host + "/ws/dashboard/");
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this.delay = MIN_DELAY;
      ws.send(JSON.stringify({ type: "subscribe", devices: this.devices }));
      this.onState({ up: true });
      // Keeps idle proxies from closing the socket, and notices a dead one.
      this.pinger = setInterval(() => this.send({ type: "ping" }), 25000);
    };
    ws.onmessage = (ev) => {
      let frame;
      try { frame = JSON.parse(ev.data); } catch { return; }
      this.onFrame(frame);
    };
    ws.onclose = () => {
      clearInterval(this.pinger);
      if (this.ws !== ws) return;
      // Jitter spreads the reconnects of many dashboards after a gateway restart.
      const wait = Math.round(this.delay * (0.75 + Math.random() * 0.5));
      this.delay = Math.min(this.delay * 2, MAX_DELAY);
      this.onState({ up: false, retryIn: wait });
      if (!opened) checkSession();
      setTimeout(() => this.start(), wait);
    };
  }

  /** Send a frame; false when the socket is not open (the caller shows it). */
  send(frame) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }
}

// A refused handshake may mean the session ended: the page itself then redirects to the login.
async function checkSession() {
  try {
    const r = await fetch(location.href, { redirect: "manual", credentials: "same-origin" });
    if (r.type === "opaqueredirect") location.reload();
  } catch { /* the gateway is down: keep retrying */ }
}

/** Show the connection state in the badge. */
export function showConnection(badge, { up, retryIn }) {
  badge.classList.toggle("up", up);
  badge.classList.toggle("down", !up);
  badge.textContent = up ? "live" : `offline · retrying in ${Math.ceil(retryIn / 1000)} s`;
  document.body.classList.toggle("stale", !up);
}
