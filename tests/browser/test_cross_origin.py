"""A front-end served from another origin, in headless Chromium: the API over CORS, the socket with a ticket."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.services, pytest.mark.django_db(transaction=True)]

# The whole front-end: what a single-page app on another origin would do with the gateway.
PAGE = """<!doctype html>
<meta charset="utf-8"><title>ops front-end</title>
<script>
const bearer = (token) => ({headers: {Authorization: "Bearer " + token}});

function open(url) {
  return new Promise((resolve) => {
    const ws = new WebSocket(url);
    ws.onopen = () => ws.send(JSON.stringify({type: "subscribe", devices: "*"}));
    ws.onmessage = (event) => {
      const frame = JSON.parse(event.data);
      if (frame.type === "snapshot") { ws.close(); resolve({snapshot: frame}); }
    };
    ws.onclose = (event) => resolve({closed: event.code});
  });
}

window.useGateway = async (api, token) => {
  const list = await fetch(api + "/api/devices?limit=1", bearer(token));
  const devices = await list.json();
  const ticketReply = await fetch(api + "/api/ws-ticket", {method: "POST", ...bearer(token)});
  const ticket = await ticketReply.json();
  const first = await open(ticket.url);
  const again = await open(ticket.url);
  return {status: list.status, devices, link: list.headers.get("Link"), ticketStatus: ticketReply.status,
          ticketUrl: ticket.url, first, again};
};

window.tryApi = async (api, token) => {
  try { return "status " + (await fetch(api + "/api/devices", bearer(token))).status; }
  catch (error) { return "blocked"; }
};
</script>
"""


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def front_end(tmp_path) -> Iterator[str]:
    """A tiny static HTTP server on its own port: another origin than the gateway's."""
    (tmp_path / "index.html").write_text(PAGE)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=tmp_path))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def other_front_end(tmp_path_factory) -> Iterator[str]:
    """The same page on an origin the gateway does not allow."""
    folder = tmp_path_factory.mktemp("other")
    (folder / "index.html").write_text(PAGE)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=folder))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_front_end_on_another_origin_uses_the_api_and_the_socket(stack, people, front_end, other_front_end,
                                                                      chromium):
    devices, tokens, _ = people
    stack.env["IOTGW_CORS_ORIGINS"] = front_end
    stack.start_web()
    page = chromium.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(front_end + "/index.html")

    result = page.evaluate("([api, token]) => useGateway(api, token)", [stack.web, tokens["alice"]])
    assert result["status"] == 200 and len(result["devices"]) == 1
    assert result["link"] and 'rel="next"' in result["link"], "the Link header is readable cross-origin"
    assert result["ticketStatus"] == 200 and tokens["alice"] not in result["ticketUrl"]
    snapshot = result["first"]["snapshot"]
    assert sorted(d["id"] for d in snapshot["devices"]) == sorted([devices["a1"][0], devices["blab"][0]])
    assert "snapshot" not in result["again"], "a ticket opens one socket only"
    assert errors == []

    other = chromium.new_page()
    other.goto(other_front_end + "/index.html")
    assert other.evaluate("([api, token]) => tryApi(api, token)", [stack.web, tokens["alice"]]) == "blocked"
