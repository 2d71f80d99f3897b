"""HTTP conventions clients expect, over real sockets to Daphne: HEAD, JSON errors, reason phrases, Location,
paging, a clean refusal of unknown WebSocket paths, and API docs that need no CDN."""

from __future__ import annotations

import http.client
import re
import socket
from urllib.parse import urlsplit

import pytest
import websockets
from asgiref.sync import sync_to_async
from websockets.exceptions import InvalidStatus

from testing.http import basic, call, http_get
from testing.ws import Dashboard

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def web(stack):
    """One Daphne with development settings (DEBUG on: Django's own 404 page is HTML then)."""
    stack.start_web()
    return stack.web


def request(web: str, method: str, path: str, headers: dict | None = None) -> tuple[http.client.HTTPResponse, bytes]:
    """One request with http.client, which, unlike urllib, lets HEAD be HEAD."""
    parts = urlsplit(web)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response, response.read()
    finally:
        conn.close()


def status_line(web: str, raw_request: bytes) -> str:
    """The first line Daphne writes for a raw HTTP request."""
    parts = urlsplit(web)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(raw_request)
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n", 1)[0].decode()


def test_head_on_get_endpoints_answers_like_get_without_a_body(web, people):
    devices, tokens, _ = people
    auth = {"Authorization": f"Bearer {tokens['alice']}"}
    for path in ("/api/devices", f"/api/devices/{devices['a1'][0]}", f"/api/devices/{devices['a1'][0]}/telemetry",
                 "/api/openapi.json"):
        get, get_body = request(web, "GET", path, auth)
        head, head_body = request(web, "HEAD", path, auth)
        assert (get.status, head.status) == (200, 200), path
        assert head_body == b"" and get_body
        assert head.getheader("Content-Type") == get.getheader("Content-Type")
        assert int(head.getheader("Content-Length")) == len(get_body), path
    unauthenticated, _ = request(web, "HEAD", "/api/devices")
    assert unauthenticated.status == 401


def test_unknown_paths_and_wrong_methods_under_api_answer_json(web, people):
    _, tokens, _ = people
    auth = {"Authorization": f"Bearer {tokens['alice']}"}
    for path in ("/api/no/such/endpoint", "/api/devices/a1/nothing-here", "/api/"):
        reply = call("GET", web + path, token=tokens["alice"])
        assert (reply.status, reply.error_code) == (404, "not_found"), path
        assert reply.headers["content-type"].startswith("application/json")
    wrong, body = request(web, "DELETE", "/api/devices", auth)
    assert wrong.status == 405 and wrong.getheader("Content-Type").startswith("application/json")
    assert set(re.split(r",\s*", wrong.getheader("Allow"))) == {"GET", "HEAD", "POST"}
    reply = call("PUT", web + "/api/ws-ticket", token=tokens["alice"])
    assert (reply.status, reply.error_code) == (405, "method_not_allowed")
    # Outside /api/ Django's pages stay as they are.
    status, page = http_get(web + "/no-such-page")
    assert status == 404 and b"<html" in page.lower()


def test_429_has_a_reason_phrase_and_retry_after(stack, people):
    devices, _, _ = people
    stack.env.update(IOTGW_HTTP_INGEST_RATE="0.25", IOTGW_HTTP_INGEST_BURST="1")
    stack.start_web()
    device_id, secret = devices["a1"]
    url = stack.web + f"/api/ingest/{device_id}/telemetry"
    assert call("POST", url, body={"x": 1}, headers=basic(device_id, secret)).status == 200
    limited = call("POST", url, body={"x": 2}, headers=basic(device_id, secret))
    assert (limited.status, limited.error_code) == (429, "rate_limited")
    assert 1 <= int(limited.headers["retry-after"]) <= 4  # one request per 4 s, the last one just now

    body = b'{"x": 3}'
    auth = basic(device_id, secret)["Authorization"].encode()
    raw = (b"POST /api/ingest/" + device_id.encode() + b"/telemetry HTTP/1.1\r\nHost: 127.0.0.1\r\n"
           b"Authorization: " + auth + b"\r\nContent-Type: application/json\r\n"
           b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
    assert status_line(stack.web, raw) == "HTTP/1.1 429 Too Many Requests"


def test_created_and_accepted_answers_point_at_what_they_made(web, people):
    devices, tokens, registry = people
    created = call("POST", web + "/api/devices", body={"id": f"loc-{registry.tag}"}, token=tokens["ops"])
    assert created.status == 201 and created.headers["location"] == f"/api/devices/loc-{registry.tag}"
    assert call("GET", web + created.headers["location"], token=tokens["ops"]).json()["id"] == f"loc-{registry.tag}"

    issued = call("POST", web + f"/api/devices/{devices['a1'][0]}/commands", body={"name": "ping"},
                  token=tokens["alice"])
    assert issued.status == 202
    command = call("GET", web + issued.headers["location"], token=tokens["alice"])
    assert command.status == 200 and command.json()["id"] == issued.json()["id"]


def test_device_list_is_paged_with_a_next_link_and_stays_a_list(web, registry):
    owner = registry.user("pager")
    token = registry.token(owner)
    mine = sorted(registry.device(f"p{i}", owner=owner)[0] for i in range(5))

    everything = call("GET", web + "/api/devices", token=token)
    assert [d["id"] for d in everything.json()] == mine and "link" not in everything.headers

    seen, url, pages = [], "/api/devices?limit=2", 0
    while url:
        page = call("GET", web + url, token=token)
        assert page.status == 200 and isinstance(page.json(), list)
        seen += [d["id"] for d in page.json()]
        pages += 1
        link = page.headers.get("link")
        url = re.fullmatch(r'<([^>]+)>; rel="next"', link).group(1) if link else None
    assert seen == mine and pages == 3

    bad = call("GET", web + "/api/devices?limit=0", token=token)
    assert (bad.status, bad.error_code) == (400, "bad_request")


async def test_websocket_to_an_unknown_path_is_refused_with_404(stack, people):
    _, tokens, _ = people
    await sync_to_async(stack.start_web)()
    base = stack.ws.removesuffix("/ws/dashboard/")
    auth = {"Authorization": f"Bearer {tokens['alice']}"}
    for path in ("/ws/dashboard", "/ws/other/", "/", "/ws/dashboard/extra"):
        with pytest.raises(InvalidStatus) as refused:
            async with websockets.connect(base + path, additional_headers=auth):
                pass
        assert refused.value.response.status_code == 404, path
    dash = await Dashboard.open(stack.ws, tokens["alice"])  # the real endpoint is unaffected
    await dash.send({"type": "ping"})
    assert (await dash.next())["type"] == "pong"
    await dash.close()
    log = stack.processes.items[0].output()
    assert "Traceback" not in log and "Exception inside application" not in log
    assert "refused a WebSocket to /ws/dashboard: no such endpoint" in log


def test_api_docs_load_swagger_ui_from_this_server(web):
    status, page = http_get(web + "/api/docs")
    assert status == 200
    html = page.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets) and any(a.endswith("swagger-ui.css") for a in assets)
    for asset in assets:
        assert asset.startswith("/"), f"{asset} is not served by the gateway"
        asset_status, body = http_get(web + asset)
        assert asset_status == 200 and body, asset
    assert "cdn" not in html.lower()
