// Fleet view over the public WebSocket API: snapshot on (re)connect, then live frames.
(function () {
  const rows = new Map();
  const body = document.querySelector("#fleet tbody");
  const conn = document.getElementById("conn");

  function render(d) {
    let tr = rows.get(d.id);
    if (!tr) { tr = document.createElement("tr"); tr.dataset.device = d.id; rows.set(d.id, tr); body.appendChild(tr); }
    const latest = Object.entries(d.latest || {}).map(([k, v]) => `${k}=${v}`).join("  ");
    tr.innerHTML = `<td>${d.name || d.id}</td><td class="${d.online ? "online" : "offline"}">${d.online ? "online" : "offline"}</td>` +
      `<td>${d.last_seen ? new Date(d.last_seen).toLocaleTimeString() : "—"}</td><td class="latest">${latest}</td>`;
  }
  const state = new Map();
  function connect(delay) {
    const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws/dashboard/");
    ws.onopen = () => { conn.textContent = "live"; conn.className = "conn up"; delay = 1000; ws.send(JSON.stringify({type: "subscribe", devices: "*"})); };
    ws.onmessage = (ev) => {
      const f = JSON.parse(ev.data);
      if (f.type === "snapshot") f.devices.forEach((d) => { state.set(d.id, d); render(d); });
      if (f.type === "telemetry") f.items.forEach((it) => {
        const d = state.get(it.device); if (!d) return;
        Object.assign(d.latest, it.data); d.last_seen = it.ts; d.online = true; render(d);
      });
      if (f.type === "status") { const d = state.get(f.device); if (d) { d.online = f.online; render(d); } }
    };
    ws.onclose = () => { conn.textContent = "disconnected, retrying…"; conn.className = "conn down"; setTimeout(() => connect(Math.min(delay * 2, 15000)), delay); };
  }
  connect(1000);
})();
