"""The dashboard pages as Django serves them: login required, visibility, escaping (no browser needed)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from devices.services.devices import device_register

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(client):
    user = get_user_model().objects.create_user("alice", password="pw-123456")
    client.force_login(user)
    return user


def test_pages_send_an_anonymous_visitor_to_the_login(client):
    device_register(device_id="d1")
    for url in ("/", "/devices/d1/"):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/login/?next=")


def test_the_login_page_says_when_the_password_is_wrong(client):
    get_user_model().objects.create_user("bob", password="pw-123456")
    response = client.post("/login/", {"username": "bob", "password": "nope"})
    assert response.status_code == 200 and b"Wrong username or password" in response.content
    assert client.post("/login/", {"username": "bob", "password": "pw-123456"})["Location"] == "/"


def test_a_device_page_is_404_for_a_device_the_user_may_not_see(client, alice):
    device_register(device_id="theirs")
    assert client.get("/devices/theirs/").status_code == 404
    assert client.get("/devices/nope/").status_code == 404


def test_a_device_page_escapes_the_device_name(client, alice):
    device_register(device_id="mine", name="<script>alert(1)</script>", owner=alice)
    response = client.get("/devices/mine/")
    assert response.status_code == 200
    assert b"<script>alert(1)</script>" not in response.content
    assert b"&lt;script&gt;alert(1)&lt;/script&gt;" in response.content
    assert b'data-device-id="mine"' in response.content


def test_the_pages_load_only_local_scripts(client, alice):
    device_register(device_id="mine", owner=alice)
    for url in ("/", "/devices/mine/"):
        body = client.get(url).content.decode()
        assert "http://" not in body.replace("http://testserver", "") and "https://" not in body


def test_logging_out_lands_on_the_login_page(client, alice):
    assert client.get("/login/")["Location"] == "/", "a logged-in user skips the login page"
    response = client.post("/logout/")
    assert response.status_code == 302 and response["Location"] == "/login/"
    assert client.get("/")["Location"].startswith("/login/")


def test_collectstatic_gathers_the_dashboard_and_its_vendored_chart_library(tmp_path, settings):
    from django.core.management import call_command

    settings.STATIC_ROOT = tmp_path
    call_command("collectstatic", interactive=False, verbosity=0)
    for name in ("app.css", "fleet.js", "device.js", "commands.js", "live.js", "format.js",
                 "vendor/uPlot.iife.min.js", "vendor/uPlot.min.css", "vendor/uPlot.LICENSE"):
        assert (tmp_path / "iotgw" / name).is_file(), name
        assert name.endswith("LICENSE") or (tmp_path / "iotgw" / f"{name}.gz").is_file(), f"{name} is compressed"
