"""HTTP conventions of the API in-process (Django's test client): HEAD, JSON errors, CORS, Location, paging."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from devices.services.devices import device_register
from devices.services.tokens import token_create
from iotgw import env

pytestmark = pytest.mark.django_db

FRONT_END = "https://ops.example.com"


@pytest.fixture
def token() -> str:
    user = get_user_model().objects.create_user("alice")
    for i in range(3):
        device_register(device_id=f"d{i}", owner=user)
    return token_create(user=user)


def auth(token: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def test_head_answers_like_get(client, token):
    get, head = client.get("/api/devices", **auth(token)), client.head("/api/devices", **auth(token))
    assert get.status_code == head.status_code == 200
    assert head["Content-Type"] == get["Content-Type"] and head.content == b""


@pytest.mark.parametrize("debug", [True, False])
def test_an_unknown_api_path_is_json_with_debug_on_or_off(client, settings, token, debug):
    settings.DEBUG = debug
    reply = client.get("/api/nothing/here", **auth(token))
    assert reply.status_code == 404 and reply.json() == {
        "error": {"code": "not_found", "message": "no API endpoint /api/nothing/here"}}
    assert b"<html" in client.get("/nothing/here").content.lower(), "pages outside /api/ keep Django's 404"


def test_a_wrong_method_is_json_and_says_what_is_allowed(client, token):
    reply = client.patch("/api/devices", **auth(token))
    assert reply.status_code == 405 and reply.json()["error"]["code"] == "method_not_allowed"
    assert reply["Allow"] == "GET, HEAD, POST"


def test_cors_lets_only_the_configured_origins_in(client, settings, token):
    settings.CORS_ALLOWED_ORIGINS = [FRONT_END]
    preflight = client.options("/api/ws-ticket", HTTP_ORIGIN=FRONT_END, HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
                               HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization")
    assert preflight.status_code == 200 and preflight["Access-Control-Allow-Origin"] == FRONT_END
    assert "authorization" in preflight["Access-Control-Allow-Headers"]
    assert "Access-Control-Allow-Credentials" not in preflight, "cookies do not cross origins; tokens do"

    listed = client.get("/api/devices?limit=1", HTTP_ORIGIN=FRONT_END, **auth(token))
    assert listed["Access-Control-Allow-Origin"] == FRONT_END
    assert "link" in listed["Access-Control-Expose-Headers"].lower()
    error = client.get("/api/nothing", HTTP_ORIGIN=FRONT_END, **auth(token))
    assert error.status_code == 404 and error["Access-Control-Allow-Origin"] == FRONT_END, "errors are readable too"

    foreign = client.get("/api/devices", HTTP_ORIGIN="https://evil.example", **auth(token))
    assert "Access-Control-Allow-Origin" not in foreign
    assert "Access-Control-Allow-Origin" not in client.get("/login/", HTTP_ORIGIN=FRONT_END), "only /api/"


def test_the_device_list_pages_by_id(client, token):
    first = client.get("/api/devices?limit=2", **auth(token))
    assert [d["id"] for d in first.json()] == ["d0", "d1"]
    assert first["Link"] == '</api/devices?limit=2&after=d1>; rel="next"'
    last = client.get("/api/devices?limit=2&after=d1", **auth(token))
    assert [d["id"] for d in last.json()] == ["d2"] and "Link" not in last
    assert [d["id"] for d in client.get("/api/devices", **auth(token)).json()] == ["d0", "d1", "d2"]
    # Not an id (a NUL, which PostgreSQL refuses, was a 500): a 400 like any bad parameter.
    assert client.get("/api/devices?after=%C2%94%00e", **auth(token)).status_code == 400


def test_created_devices_have_a_location(client):
    staff = token_create(user=get_user_model().objects.create_user("ops", is_staff=True))
    reply = client.post("/api/devices", {"id": "new"}, content_type="application/json", **auth(staff))
    assert reply.status_code == 201 and reply["Location"] == "/api/devices/new"


@pytest.mark.parametrize("value", ["ops.example.com", "https://ops.example.com/app", "ftp://x", "https://"])
def test_a_malformed_cors_origin_fails_loudly(monkeypatch, value):
    monkeypatch.setenv("IOTGW_CORS_ORIGINS", f"https://fine.example, {value}")
    with pytest.raises(ValueError, match="IOTGW_CORS_ORIGINS"):
        env.origins("IOTGW_CORS_ORIGINS")


def test_cors_origins_are_a_comma_separated_list(monkeypatch):
    monkeypatch.setenv("IOTGW_CORS_ORIGINS", " https://a.example ,http://127.0.0.1:5173/,")
    assert env.origins("IOTGW_CORS_ORIGINS") == ["https://a.example", "http://127.0.0.1:5173"]
