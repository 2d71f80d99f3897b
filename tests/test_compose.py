"""compose.yaml, its files and the image stay in step with the code (read, as there is no Docker engine here)."""

from __future__ import annotations

import re
import socket
import tomllib

import yaml

from iotgw import env as iotgw_env
from testing.processes import ROOT

LONG_RUNNING = ("mosquitto", "redis", "postgres", "web", "bridge", "proxy")
TEST_TOOLING = ("pytest", "pytest-django", "pytest-asyncio", "playwright", "ruff")


def load() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def conf(name: str) -> dict[str, str]:
    lines = (ROOT / "compose" / name).read_text().split("\n")
    return dict(line.split(None, 1) for line in lines if line and not line.startswith("#") and " " in line)


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: str) -> dict[str, str]:
    return {normal(line.split("==")[0]): line.split("==")[1].strip() for line in (ROOT / path).read_text().split("\n")
            if "==" in line and not line.startswith("#")}


def test_compose_runs_the_spec_processes():
    services = load()["services"]
    assert {"mosquitto", "redis", "postgres", "web", "bridge", "proxy"} <= set(services)
    web = services["web"]["command"]
    assert web[0] == "daphne" and web[-1] == "iotgw.asgi:application"
    assert services["bridge"]["command"][-2:] == ["runworker", "mqtt-bridge"]


def test_web_and_bridge_get_every_required_variable_and_run_as_production():
    services = load()["services"]
    for name in ("web", "bridge", "migrate"):
        env = services[name]["environment"]
        assert {"DATABASE_URL", "REDIS_URL", "MQTT_URL"} <= set(env), name
        assert env["MQTT_URL"].startswith("mqtt://iotgw-bridge:") and "@mosquitto:" in env["MQTT_URL"]
        assert env["MQTT_DYNSEC"] == "1" and env["MQTT_DYNSEC_URL"].startswith("mqtt://admin:")
        assert env["DJANGO_DEBUG"] == "0"
        assert ":?" in env["DJANGO_SECRET_KEY"], "no placeholder key: compose refuses to start without one"
        assert env["DJANGO_SECURE_PROXY_SSL_HEADER"] == "X-Forwarded-Proto" and env["DJANGO_CSRF_TRUSTED_ORIGINS"]


def test_scaled_bridges_get_distinct_client_ids_from_their_hostnames(monkeypatch):
    bridge = load()["services"]["bridge"]
    assert "MQTT_CLIENT_ID" not in bridge["environment"]  # one fixed id made replicas knock each other off
    assert "container_name" not in bridge and "hostname" not in bridge
    ids = set()
    for hostname in ("3f2a9c0d1b7e", "8c1d2e3f4a5b"):  # what two replicas' containers are called
        monkeypatch.setattr(socket, "gethostname", lambda h=hostname: h)
        ids.add(iotgw_env.default_client_id())
    assert len(ids) == 2


def test_web_scales_behind_the_proxy():
    services = load()["services"]
    assert "ports" not in services["web"] and "8000" in [str(p) for p in services["web"]["expose"]]
    proxy = services["proxy"]
    assert proxy["image"].startswith("caddy:") and any(":80" in p for p in proxy["ports"])
    assert "./compose/Caddyfile:/etc/caddy/Caddyfile:ro" in proxy["volumes"]
    caddyfile = (ROOT / "compose" / "Caddyfile").read_text()
    upstream = re.search(r"dynamic a \{\s*name (\S+)\s*port (\d+)", caddyfile)
    assert upstream and upstream.groups() == ("web", "8000"), "every replica of web, found again as it scales"
    assert "health_uri /healthz" in caddyfile


def test_long_running_services_have_healthchecks_and_restart_policies():
    services = load()["services"]
    for name in LONG_RUNNING:
        assert services[name].get("restart") == "unless-stopped", name
        if name != "proxy":
            assert services[name]["healthcheck"]["test"], name
    assert services["bridge"]["healthcheck"]["test"][-1] == "bridgestatus"
    assert "/healthz" in " ".join(services["web"]["healthcheck"]["test"])
    for name in ("broker-init", "migrate"):
        assert services[name]["restart"] == "no", name
    assert services["web"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_the_broker_ships_with_device_auth_on_and_a_writable_persistence_directory():
    settings = conf("mosquitto.conf")
    assert settings["allow_anonymous"] == "false"
    assert settings["plugin"].endswith("mosquitto_dynamic_security.so")
    assert settings["plugin_opt_config_file"].startswith(settings["persistence_location"])
    assert settings["persistence"] == "true"
    # A killed broker loses what changed since its last save: at most a second's worth.
    assert int(settings["autosave_interval"]) <= 1 and settings.get("autosave_on_changes", "false") == "false"
    assert int(settings["max_queued_messages"]) > 1000
    services = load()["services"]
    broker, init = services["mosquitto"], services["broker-init"]
    uid = broker["user"].split(":")[0]
    assert uid not in ("0", "root")
    data = next(v for v in broker["volumes"] if v.endswith(":" + settings["persistence_location"].rstrip("/")))
    assert data.split(":")[0] in load()["volumes"], "a named volume, not a bind mount of a root-owned directory"
    assert data in init["volumes"] and init["user"] == "root"
    script = init["command"][0]
    assert f"chown -R {uid}:" in script and "mosquitto_ctrl dynsec init" in script
    assert broker["depends_on"]["broker-init"]["condition"] == "service_completed_successfully"
    assert "dynsecsetup" in " ".join(services["migrate"]["command"]), "the bridge's broker account"


def test_the_image_runs_as_a_user_and_holds_no_test_tooling():
    dockerfile = (ROOT / "Dockerfile").read_text()
    user = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert user and user[-1].split(":")[0] not in ("0", "root")
    installs = re.findall(r"pip install (.*)", dockerfile)
    assert installs == ["-r requirements.lock"]
    runtime, test = pins("requirements.lock"), pins("requirements-test.lock")
    assert not set(TEST_TOOLING) & set(runtime)
    assert "-r requirements.lock" in (ROOT / "requirements-test.lock").read_text()
    assert set(TEST_TOOLING) <= set(test)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"var", ".venv", "db.sqlite3*", ".env"} <= set(ignored), "local secrets and state stay out of the image"


def test_every_pinned_dependency_is_in_its_lock():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime, test = pins("requirements.lock"), pins("requirements-test.lock")
    # The test lock installs the runtime one too (-r), so a test dependency may be pinned in either.
    for group, lock in ((project["dependencies"], runtime), (project["optional-dependencies"]["test"], runtime | test)):
        for requirement in group:
            name, version = re.match(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([^;\s]+)", requirement).groups()
            assert lock.get(normal(name)) == version, requirement


def test_the_ha_profile_runs_a_replica_and_sentinels_that_the_documented_redis_url_reaches():
    from iotgw.layers import redis_host

    services = load()["services"]
    replica, sentinel = services["redis-replica"], services["redis-sentinel"]
    assert replica["profiles"] == ["ha"] and sentinel["profiles"] == ["ha"]
    assert "profiles" not in services["redis"], "the default deployment keeps its single Redis"
    assert replica["command"][-3:] == ["--replicaof", "redis", "6379"]
    script = sentinel["command"][0]
    monitor = re.search(r"'sentinel monitor (\S+) (\S+) (\d+) (\d+)'", script)
    assert monitor, script
    master, host, port, quorum = monitor.groups()
    assert (host, port) == ("redis", "6379") and sentinel["deploy"]["replicas"] >= 3
    assert 1 < int(quorum) <= sentinel["deploy"]["replicas"], "a majority of the sentinels decides a failover"
    documented = re.search(r"REDIS_URL=(redis\+sentinel://\S+)", (ROOT / "docs" / "scale-out.md").read_text())
    assert documented, "docs/scale-out.md gives the ha profile's REDIS_URL"
    host_entry = redis_host(documented.group(1))
    assert host_entry["master_name"] == master and host_entry["sentinels"] == [("redis-sentinel", 26379)]
    assert "port 26379" in script and "${REDIS_URL:-" in (ROOT / "compose.yaml").read_text()


def test_the_broker_also_speaks_mqtt_over_websockets_on_9001_for_browser_devices():
    text = (ROOT / "compose" / "mosquitto.conf").read_text()
    lines = [line for line in text.split("\n") if line and not line.startswith("#")]
    assert "listener 1883" in lines and "listener 9001" in lines
    assert lines[lines.index("listener 9001") + 1] == "protocol websockets", "the protocol of the 9001 listener"
    ports = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["mosquitto"]["ports"]
    assert "9001:9001" in ports


def test_the_notification_sender_runs_with_a_health_check():
    notify = load()["services"]["notify"]
    assert notify["command"][-1] == "notify" and notify["restart"] == "unless-stopped"
    assert notify["healthcheck"]["test"][-2:] == ["notify", "--status"]
    assert {"DATABASE_URL"} <= set(notify["environment"])


def test_the_coap_profile_runs_the_coap_server_on_udp_5683_with_plain_mode_off_by_default():
    coap = load()["services"]["coap"]
    assert coap["profiles"] == ["coap"] and coap["command"][-1] == "coapserver"
    assert coap["ports"] == ["${IOTGW_COAP_PORT:-5683}:5683/udp"]
    assert coap["environment"]["IOTGW_COAP_PLAIN"] == "${IOTGW_COAP_PLAIN:-0}"
    assert {"DATABASE_URL", "REDIS_URL"} <= set(coap["environment"]) and coap["restart"] == "unless-stopped"
    assert "healthcheck" in coap


def test_the_coap_healthcheck_is_a_ping_a_listening_server_answers(tmp_path):
    import asyncio
    import subprocess
    import sys

    from aiocoap import Context

    from testing.coap import free_udp_port

    check = load()["services"]["coap"]["healthcheck"]["test"]
    port = free_udp_port()
    code = check[3].replace("('::1', 5683)", f"('::1', {port})")

    async def probe() -> int:
        server = await Context.create_server_context(None, bind=("::1", port), transports=["udp6"])
        try:
            done = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", code], timeout=10)
            return done.returncode
        finally:
            await server.shutdown()

    assert asyncio.run(probe()) == 0


def test_the_ha_profile_adds_a_second_web_behind_the_proxy_and_a_second_bridge():
    services = load()["services"]
    for name, copy in (("web", "web-b"), ("bridge", "bridge-b")):
        assert services[copy]["profiles"] == ["ha"] and "profiles" not in services[name], copy
        same = {k: v for k, v in services[copy].items() if k not in ("profiles", "networks")}
        assert same == services[name], f"{copy} runs as {name} does"
    assert services["web-b"]["networks"]["default"]["aliases"] == ["web"], "Caddy balances every `web` address"
    assert "hostname" not in services["bridge-b"], "its own client id, from its own hostname"
    doc = (ROOT / "docs" / "scale-out.md").read_text()
    assert "MQTT_SHARE_GROUP=iotgw" in doc and "--profile ha up -d" in doc
