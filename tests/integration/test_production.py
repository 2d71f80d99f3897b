"""From laptop to production: the README's environment passes Django's deploy checks, production processes refuse
unsafe settings, login works behind an HTTPS proxy, and readiness knows an unmigrated database."""

from __future__ import annotations

import http.client
import json
import re
import secrets
import socket
import subprocess
import sys
import uuid
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode

import pytest

from testing.http import http_get
from testing.processes import ROOT, free_port, stack_env
from testing.waiting import wait_until

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

SITE = "iot.example.test"
STRONG_KEY = secrets.token_urlsafe(50)


def readme_production_env() -> dict[str, str]:
    """The environment of the README's split deployment, step 3, placeholders filled in."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("### Split deployment, step by step", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    env = dict(line.strip().split("=", 1) for line in block.strip().splitlines())
    return {k: v.replace("<secret key>", STRONG_KEY).replace("<", "").replace(">", "").replace(" ", "-")
            for k, v in env.items()}


def run(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def base_env(**overrides: str | None) -> dict[str, str]:
    env = stack_env(database_url="sqlite:///" + str(ROOT / "var" / "prod-test.sqlite3"), redis_url=None,
                    mqtt_url=None, run_id="prod")
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def one_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert result.returncode != 0 and len(lines) == 1, result.stderr
    return lines[0]


def test_check_deploy_reports_nothing_with_the_readme_production_environment():
    env = base_env(**readme_production_env())
    result = run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


DAPHNE = str(Path(sys.executable).with_name("daphne"))
WEB = [DAPHNE, "-p", "0", "iotgw.asgi:application"]
BRIDGE = [sys.executable, "manage.py", "runworker", "mqtt-bridge"]


@pytest.mark.parametrize("process", ["web", "bridge"])
@pytest.mark.parametrize(("unsafe", "named"), [
    ({"DJANGO_SECRET_KEY": None}, "DJANGO_SECRET_KEY"),
    ({"DJANGO_SECRET_KEY": "short-and-guessable"}, "DJANGO_SECRET_KEY"),
    ({"DJANGO_DEBUG": "1"}, "DJANGO_DEBUG"),
    ({"DJANGO_DEBUG": None}, "DJANGO_DEBUG"),  # DEBUG's development default is not for a deployment
], ids=["no-key", "weak-key", "debug-on", "debug-default"])
def test_web_and_bridge_refuse_to_start_unsafe_in_one_line_naming_the_variable(process, unsafe, named):
    env = base_env(REDIS_URL="redis://127.0.0.1:6379/0", MQTT_URL="mqtt://127.0.0.1:1883", **unsafe)
    line = one_line(run(WEB if process == "web" else BRIDGE, env))
    assert named in line and "refuses to start" in line


def test_the_all_in_one_refuses_the_placeholder_key_only_with_debug_off():
    with socket.socket() as taken:  # a taken MQTT port makes a gateway that got past the check exit at once
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        args = [sys.executable, "manage.py", "gateway", "--port", str(free_port()), "--mqtt-port",
                str(taken.getsockname()[1])]
        off = one_line(run(args, base_env(DJANGO_DEBUG="0", DJANGO_SECRET_KEY=None)))
        assert "DJANGO_SECRET_KEY" in off
        laptop = one_line(run(args, base_env(DJANGO_DEBUG=None, DJANGO_SECRET_KEY=None)))  # `make run`
        assert "refuses" not in laptop and "MQTT port" in laptop


@pytest.fixture
def proxied_web(stack):
    """A separate web process configured as the README says for a site behind a TLS-terminating proxy."""
    stack.env.update(DJANGO_ALLOWED_HOSTS=f"{SITE},127.0.0.1", DJANGO_CSRF_TRUSTED_ORIGINS=f"https://{SITE}",
                     DJANGO_SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto", DJANGO_HTTPS="1")
    stack.start_web()
    return stack


def request(port: int, method: str, path: str, *, headers: dict, body: bytes | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def test_login_behind_an_https_proxy_succeeds(proxied_web, registry):
    user = registry.user("proxied", password="pw-123456")
    proxy = {"Host": SITE, "X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}
    form = request(proxied_web.web_port, "GET", "/login/", headers=proxy)
    assert form.status == 200
    cookies = SimpleCookie()
    for header in form.headers.get_all("Set-Cookie"):
        assert "Secure" in header, header  # cookies a browser will only send back over HTTPS
        cookies.load(header)
    csrf = cookies["csrftoken"].value
    body = urlencode({"username": user.username, "password": "pw-123456", "csrfmiddlewaretoken": csrf}).encode()
    done = request(proxied_web.web_port, "POST", "/login/", body=body, headers={
        **proxy, "Origin": f"https://{SITE}", "Referer": f"https://{SITE}/login/",
        "Cookie": f"csrftoken={csrf}", "Content-Type": "application/x-www-form-urlencoded"})
    assert done.status == 302 and done.headers["Location"] == "/", done.status  # not 403 "Origin checking failed"
    assert any(c.startswith("sessionid=") and "Secure" in c for c in done.headers.get_all("Set-Cookie"))
    assert "max-age=31536000" in done.headers["Strict-Transport-Security"]


def test_behind_the_proxy_plain_http_is_redirected_but_health_and_hooks_are_not(proxied_web):
    plain = request(proxied_web.web_port, "GET", "/login/", headers={"Host": SITE})
    assert plain.status == 301 and plain.headers["Location"] == f"https://{SITE}/login/"
    assert http_get(proxied_web.web + "/healthz")[0] == 200
    hook = request(proxied_web.web_port, "POST", "/mqtt/auth", headers={"Host": "127.0.0.1"}, body=b"")
    assert hook.status in (200, 403)  # answered (a deny), not redirected


def test_readyz_on_an_unmigrated_database_says_which_migrations_are_missing(redis_url, processes):
    path = ROOT / "var" / f"unmigrated-{uuid.uuid4().hex[:6]}.sqlite3"
    env = stack_env(database_url=f"sqlite:///{path}", redis_url=redis_url, mqtt_url=None, run_id="unmig")
    try:
        port = free_port()
        web = processes.start("web", [DAPHNE, "-b", "127.0.0.1", "-p", str(port), "iotgw.asgi:application"], env)
        wait_until(lambda: http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200 or not web.alive(), timeout=30)
        status, raw = http_get(f"http://127.0.0.1:{port}/readyz")
        assert status == 503
        body = json.loads(raw)
        assert body["checks"]["database"] is True and body["checks"]["schema"] is False
        assert re.match(r"\d+ migration\(s\) not applied \(contenttypes\.0001_initial, ", body["reasons"]["schema"])
        assert "manage.py migrate" in body["reasons"]["schema"]

        assert run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], env).returncode == 0
        status, raw = http_get(f"http://127.0.0.1:{port}/readyz")
        body = json.loads(raw)
        assert body["checks"]["schema"] is True and "reasons" not in body  # (no bridge yet: still 503)
    finally:
        processes.stop_all()
        for leftover in path.parent.glob(path.name + "*"):
            leftover.unlink()
