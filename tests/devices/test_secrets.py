"""Device secrets and API tokens are issued by the services and shown once: CLI, admin, and the demo set-up."""

from __future__ import annotations

import base64
import io
import re
import subprocess

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from devices import signals
from devices.models import ApiToken, Device
from devices.secrets import mosquitto_password_hash
from devices.selectors import device_secret_ok, token_user
from devices.services.devices import device_register
from sim.management.commands import demo
from tests.conftest import need_binary

pytestmark = pytest.mark.django_db

SECRET_CELL = re.compile(r'<code class="shown-once">([^<]+)</code>')


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.fixture
def admin_client(client):
    user = get_user_model().objects.create_superuser("root", password="pw-123456")
    client.force_login(user)
    return client


def test_rotatesecret_prints_a_new_secret_and_the_old_one_stops_working():
    _, old = device_register(device_id="rot-1")
    before = Device.objects.get(pk="rot-1").mqtt_password_hash
    out = run("rotatesecret", "rot-1")
    new = re.search(r"secret:\s+(\S+)", out)[1]
    assert device_secret_ok("rot-1", new) and not device_secret_ok("rot-1", old)
    assert Device.objects.get(pk="rot-1").mqtt_password_hash not in ("", before)
    with pytest.raises(CommandError, match="no device"):
        run("rotatesecret", "nope")


def test_the_mosquitto_hash_is_what_mosquitto_passwd_writes(tmp_path):
    need_binary("mosquitto_passwd")
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(tmp_path / "pw"), "dev", "s3cret"], check=True,
                   capture_output=True)
    written = (tmp_path / "pw").read_text().strip().split(":", 1)[1]
    salt = base64.b64decode(written.split("$")[3])
    assert mosquitto_password_hash("s3cret", salt=salt) == written
    assert mosquitto_password_hash("other", salt=salt) != written


def test_admin_add_device_shows_the_secret_once_and_it_works(admin_client):
    response = admin_client.post("/admin/devices/device/add/", {"id": "adm-1", "name": "Adm", "enabled": "on",
                                                                "offline_after": "120"})
    assert response.status_code == 200 and "no-store" in response["Cache-Control"]
    device_id, username, secret = SECRET_CELL.findall(response.content.decode())
    assert device_id == username == "adm-1" and device_secret_ok("adm-1", secret)
    device = Device.objects.get(pk="adm-1")
    assert device.offline_after == 120 and device.mqtt_password_hash.startswith("$7$")
    assert secret not in admin_client.get("/admin/devices/device/adm-1/change/").content.decode()


def test_admin_action_issues_new_secrets_shown_once(admin_client):
    olds = {d: device_register(device_id=d)[1] for d in ("act-1", "act-2")}
    response = admin_client.post("/admin/devices/device/", {"action": "issue_new_secrets",
                                                            "_selected_action": list(olds)})
    assert response.status_code == 200
    cells = SECRET_CELL.findall(response.content.decode())
    new = dict(zip(cells[0::3], cells[2::3], strict=True))
    assert set(new) == set(olds)
    for device_id in olds:
        assert device_secret_ok(device_id, new[device_id]) and not device_secret_ok(device_id, olds[device_id])


def test_admin_disabling_a_device_goes_through_the_service_and_tells_the_edges(admin_client):
    calls = []

    def heard(sender, **kwargs):
        calls.append(kwargs)

    signals.device_enabled_changed.connect(heard, dispatch_uid="test-heard")
    try:
        device_register(device_id="dis-1")
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr("django.db.transaction.on_commit", lambda fn, using=None, robust=False: fn())
            response = admin_client.post("/admin/devices/device/dis-1/change/", {"name": "dis-1"})
    finally:
        signals.device_enabled_changed.disconnect(dispatch_uid="test-heard")
    assert response.status_code == 302
    assert Device.objects.get(pk="dis-1").enabled is False
    assert [{k: v for k, v in c.items() if k != "signal"} for c in calls] == [{"device_id": "dis-1", "enabled": False}]


def test_admin_add_api_token_shows_the_key_once_and_it_works(admin_client):
    owner = get_user_model().objects.create_user("tok-owner")
    response = admin_client.post("/admin/devices/apitoken/add/", {"user": owner.pk, "name": "ci"})
    assert response.status_code == 200
    user, name, key = SECRET_CELL.findall(response.content.decode())
    assert (user, name) == ("tok-owner", "ci") and token_user(key) == owner
    token = ApiToken.objects.get(user=owner)
    assert token.prefix == key[:12] and key not in admin_client.get(
        f"/admin/devices/apitoken/{token.pk}/change/").content.decode()


def test_demo_prints_the_same_token_each_run_and_keeps_one_live(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "TOKEN_FILE", tmp_path / "demo-token.json")
    monkeypatch.setattr("sim.fleet.SECRETS_FILE", tmp_path / "secrets.json")
    first, second = run("demo"), run("demo")
    token = re.search(r"API token: (\S+)", first)[1]
    assert re.search(r"API token: (\S+)", second)[1] == token
    secrets = re.findall(r"(demo-\d)\s+MQTT username \S+\s+secret (\S+)", second)
    assert len(secrets) == 3 and all(device_secret_ok(d, s) for d, s in secrets)
    assert re.findall(r"secret (\S+)", first) == re.findall(r"secret (\S+)", second)

    (tmp_path / "demo-token.json").unlink()  # the kept token is lost: a new one replaces the old
    third = re.search(r"API token: (\S+)", run("demo"))[1]
    assert third != token and token_user(token) is None and token_user(third) is not None
    assert ApiToken.objects.filter(user__username="demo", revoked_at__isnull=True).count() == 1
