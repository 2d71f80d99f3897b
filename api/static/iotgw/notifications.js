// The test-send buttons: POST /api/notifications/channels/{id}/test with the session, then show its answer.
const csrf = document.querySelector("input[name=csrfmiddlewaretoken]").value;

for (const button of document.querySelectorAll("button.test-send")) {
  button.addEventListener("click", async () => {
    const row = button.closest("tr");
    const result = row.querySelector(".result");
    button.disabled = true;
    result.textContent = "sending…";
    result.className = "result muted";
    try {
      const r = await fetch(`/api/notifications/channels/${row.dataset.channel}/test`, {
        method: "POST", credentials: "same-origin", headers: { "X-CSRFToken": csrf, Accept: "application/json" },
      });
      const body = await r.json();
      if (!r.ok) {
        result.textContent = `error: ${body.error?.message ?? r.status}`;
        result.className = "result bad";
      } else {
        const code = body.status_code ? ` (HTTP ${body.status_code})` : "";
        result.textContent = body.ok ? `sent${code} in ${Math.round(body.latency_ms)} ms`
                                     : `failed${code}: ${body.error}`;
        result.className = body.ok ? "result good" : "result bad";
      }
    } catch (err) {
      result.textContent = `error: ${err}`;
      result.className = "result bad";
    } finally {
      button.disabled = false;
    }
  });
}
