"""The all-in-one's embedded broker, Mosquitto and amqtt alike: real mosquitto_pub/sub and paho clients, v3.1.1 and v5.

Each device logs in with its id and secret and reaches only its own topics; the
README's own example is run as written.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import uuid

import paho.mqtt.client as mqtt
import pytest

from devices.models import Device, Telemetry
from devices.services.devices import device_rotate_secret, device_set_enabled
from testing.http import call
from testing.mqtt import NOT_AUTHORIZED, MqttProbe
from testing.processes import ROOT, AllInOne, free_port, stack_env
from testing.registry import demo_secret
from testing.waiting import wait_until
from tests.conftest import need_binary

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

V5_UNSUPPORTED = 0x84


@pytest.fixture(params=["mosquitto", "amqtt"])
def allinone(request, live_db, processes, run_id):
    """A gateway with each embedded broker in turn (Mosquitto is what `auto` picks where it is installed)."""
    if request.param == "mosquitto":
        need_binary("mosquitto")
    need_binary("mosquitto_pub")
    env = stack_env(database_url=live_db, redis_url=None, mqtt_url=None, run_id=run_id)
    gw = AllInOne(env=env, processes=processes, kind=request.param).start()
    yield gw
    gw.stop()
    shutil.rmtree(gw.state_dir, ignore_errors=True)


@pytest.fixture
def staff_token(registry):
    return registry.token(registry.user("ops", staff=True))


def readme_example() -> list[str]:
    """The `mosquitto_pub` line of the README's First run section, as argv."""
    readme = (ROOT / "README.md").read_text()
    first_run = readme.split("## First run", 1)[1].split("\n## ", 1)[0]
    line = next(ln.strip() for ln in first_run.splitlines() if ln.strip().startswith("mosquitto_pub "))
    return shlex.split(line)


def stored(device_id: str, **data) -> int:
    return Telemetry.objects.filter(device_id=device_id, data=data).count()


def issue(gw: AllInOne, token: str, device_id: str, name: str = "ping") -> dict:
    reply = call("POST", f"{gw.web}/api/devices/{device_id}/commands", body={"name": name}, token=token)
    assert reply.status == 202, reply.body
    return reply.json()


def logged_in(gw: AllInOne, device_id: str, secret: str, protocol: int | None = None) -> MqttProbe:
    """A connected client of that device, once the broker knows it (a registration counts within a second)."""
    def attempt() -> MqttProbe | None:
        probe = MqttProbe(gw.mqtt_port, protocol=protocol or gw.protocol)
        return probe if probe.try_connect(device_id, secret) == 0 else None

    return wait_until(attempt, timeout=10, what=f"{device_id} accepted by the broker")


def got_command(probe: MqttProbe, device_id: str, command: dict) -> bool:
    """Whether that command reached the probe on the device's commands topic."""
    return probe.got(f"devices/{device_id}/commands", match=lambda m: json.loads(m.payload)["id"] == command["id"])


def online(device_id: str) -> bool:
    return Device.objects.filter(pk=device_id, online=True).exists()


@pytest.mark.parametrize("kind", ["mosquitto", "amqtt"])
def test_the_readme_example_is_stored_as_written_at_qos_0_and_1_while_demo_1_is_simulated(
        kind, live_db, processes, run_id):
    if kind == "mosquitto":
        need_binary("mosquitto")
    need_binary("mosquitto_pub")
    env = stack_env(database_url=live_db, redis_url=None, mqtt_url=None, run_id=run_id)
    gw = AllInOne(env=env, processes=processes, kind=kind, extra=("--simulate", "3")).start()  # as `make run`
    try:
        argv = readme_example()
        assert argv[argv.index("-t") + 1] == "devices/demo-1/telemetry" and argv[argv.index("-u") + 1] == "demo-1"
        sample = json.loads(argv[argv.index("-m") + 1])
        argv[argv.index("-p") + 1] = str(gw.mqtt_port)
        argv[argv.index("-P") + 1] = demo_secret("demo-1")
        wait_until(lambda: online("demo-1"), what="demo-1 simulated")
        # QoS 0 connect-publish-disconnect, as written, then with -q 1; six times each (amqtt lost them all at
        # QoS 0). One at a time, as a person would type it: each run must show up before the next.
        for run, argv_run in enumerate([argv] * 6 + [argv + ["-q", "1"]] * 6, start=1):
            result = subprocess.run(argv_run, capture_output=True, text=True, timeout=20)
            assert result.returncode == 0, result.stderr
            wait_until(lambda: stored("demo-1", **sample) == run, timeout=10,  # noqa: B023
                       what=f"run {run} ({' '.join(argv_run[-2:])}) stored")
    finally:
        gw.stop()
        shutil.rmtree(gw.state_dir, ignore_errors=True)


@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5], ids=["v3.1.1", "v5"])
def test_paho_device_of_either_version_publishes_and_gets_its_commands_or_a_plain_refusal(
        allinone, registry, staff_token, protocol):
    device_id, secret = registry.device("paho")
    if protocol == mqtt.MQTTv5 and allinone.kind == "amqtt":
        code = MqttProbe(allinone.mqtt_port, protocol=protocol).try_connect(device_id, secret)
        assert code == V5_UNSUPPORTED  # what a v5 client shows its user: "Unsupported protocol version"
        log = allinone.wait_log("was turned away")
        assert "speaks MQTT 3.1.1 only" in log and "install Mosquitto" in log
        return
    probe = logged_in(allinone, device_id, secret, protocol)
    assert probe.subscribe(f"devices/{device_id}/commands") == 1
    assert probe.publish(f"devices/{device_id}/telemetry", b'{"lux": 7}') == 0
    wait_until(lambda: stored(device_id, lux=7) == 1, what="the sample stored")
    command = issue(allinone, staff_token, device_id)
    assert got_command(probe, device_id, command)
    probe.close()


@pytest.mark.parametrize("version", ["mqttv311", "mqttv5"])
def test_mosquitto_sub_and_pub_of_either_version_work_or_are_told_why(allinone, registry, staff_token, version):
    device_id, secret = registry.device("cli")
    logged_in(allinone, device_id, secret, mqtt.MQTTv311).close()
    login = ["-p", str(allinone.mqtt_port), "-V", version, "-u", device_id, "-P", secret]
    pub = subprocess.run(["mosquitto_pub", *login, "-q", "1", "-t", f"devices/{device_id}/telemetry",
                          "-m", '{"rpm": 900}'], capture_output=True, text=True, timeout=20)
    if version == "mqttv5" and allinone.kind == "amqtt":
        assert pub.returncode != 0 and "Unsupported Protocol Version" in pub.stderr
        allinone.wait_log("install Mosquitto")
        return
    assert pub.returncode == 0, pub.stderr
    wait_until(lambda: online(device_id) and stored(device_id, rpm=900) == 1, what="the sample stored")
    sub = subprocess.Popen(["mosquitto_sub", *login, "-q", "1", "-t", f"devices/{device_id}/commands", "-C", "1",
                            "-W", "30", "-i", f"sub-{uuid.uuid4().hex[:6]}"], stdout=subprocess.PIPE, text=True)
    try:
        # The command goes out when the bridge sweeps; repeat it until the subscription is surely in place.
        def received() -> dict | None:
            issue(allinone, staff_token, device_id)
            try:
                out, _ = sub.communicate(timeout=1.5)
            except subprocess.TimeoutExpired:
                return None
            return json.loads(out)

        command = wait_until(received, timeout=25, what="a command through mosquitto_sub")
        assert command["name"] == "ping" and sub.returncode == 0
    finally:
        sub.kill()


def test_wrong_secret_unknown_device_and_anonymous_logins_are_refused_and_logged(allinone, registry):
    device_id, secret = registry.device("locked")
    for username, password in ((device_id, "not-" + secret), ("nobody-" + uuid.uuid4().hex[:6], secret),
                               (None, None), (device_id, "")):
        probe = MqttProbe(allinone.mqtt_port, protocol=allinone.protocol)
        if username is None:
            probe.client.connect("127.0.0.1", allinone.mqtt_port)
            probe.client.loop_start()
            code = probe.wait("connack")
            probe.client.loop_stop()
        else:
            code = probe.try_connect(username, password)
        assert code not in (0, -1), (username, code)  # refused by the broker, not a network error
    assert "MQTT login refused" in allinone.wait_log("MQTT login refused")
    result = subprocess.run(["mosquitto_pub", "-p", str(allinone.mqtt_port), "-t", f"devices/{device_id}/telemetry",
                             "-m", "{}"], capture_output=True, text=True, timeout=20)
    assert result.returncode != 0 and "not authorised" in result.stderr.lower()


def test_a_device_reaches_no_topic_of_another_device(allinone, registry, staff_token):
    (mine, my_secret), (other, other_secret) = registry.device("mine"), registry.device("other")
    victim = logged_in(allinone, other, other_secret)
    assert victim.subscribe(f"devices/{other}/commands") == 1
    assert victim.publish(f"devices/{other}/telemetry", b'{"t": 1}') == 0
    wait_until(lambda: online(other), what="the victim online")

    intruder = logged_in(allinone, mine, my_secret)
    # Subscriptions to another device's commands, and to everything: refused, or granted but never fed.
    for topic in (f"devices/{other}/commands", "devices/#", "#", f"devices/{other}/telemetry"):
        assert intruder.subscribe(topic) in (0x80, NOT_AUTHORIZED, 1, 0)
    assert intruder.subscribe(f"devices/{mine}/commands") == 1
    # Publishing as the other device: refused (MQTT 5: PUBACK 0x87) or dropped; nothing is stored.
    refused = NOT_AUTHORIZED if allinone.protocol == mqtt.MQTTv5 else 0  # a 3.1.1 PUBACK carries no reason
    assert intruder.publish(f"devices/{other}/telemetry", b'{"spoofed": 1}') == refused
    assert intruder.publish(f"devices/{other}/commands", b'{"id": "x", "name": "reboot"}') == refused

    # Traffic the intruder must not see: a command to the victim; then one to the intruder itself, after which
    # anything leaked would already have arrived (the broker keeps each client's messages in order).
    to_victim = issue(allinone, staff_token, other)
    assert got_command(victim, other, to_victim)
    assert intruder.publish(f"devices/{mine}/telemetry", b'{"t": 2}') == 0
    wait_until(lambda: online(mine), what="the intruder online")
    to_me = issue(allinone, staff_token, mine)
    assert got_command(intruder, mine, to_me)
    # (Mosquitto sends a copy per matching subscription: MQTT 5 allows it.)
    assert {m.topic for m in intruder.received} == {f"devices/{mine}/commands"}
    assert [m.payload for m in victim.received if b"reboot" in m.payload] == []
    assert stored(other, spoofed=1) == 0
    victim.close()
    intruder.close()


def test_retained_status_of_one_device_never_reaches_another(allinone, registry, staff_token):
    (mine, my_secret), (other, other_secret) = registry.device("fresh"), registry.device("loud")
    loud = logged_in(allinone, other, other_secret)
    loud.client.publish(f"devices/{other}/status", b"online", qos=1, retain=True).wait_for_publish(10)
    wait_until(lambda: online(other), what="the retained status stored")
    # The bridge holds a devices/# subscription: amqtt 0.12 used to send every new client the retained
    # messages of every subscription on the broker.
    fresh = logged_in(allinone, mine, my_secret)
    assert fresh.subscribe(f"devices/{mine}/commands") == 1
    assert fresh.publish(f"devices/{mine}/telemetry", b'{"t": 1}') == 0
    wait_until(lambda: online(mine), what="the device online")
    command = issue(allinone, staff_token, mine)
    assert got_command(fresh, mine, command)
    assert [m.topic for m in fresh.received] == [f"devices/{mine}/commands"]
    loud.close()
    fresh.close()


def test_a_new_secret_or_disabling_drops_the_connection_made_with_the_old_one(allinone, registry):
    device_id, old = registry.device("rot")
    probe = logged_in(allinone, device_id, old)
    new = device_rotate_secret(device_id=device_id)  # committed by another process than the gateway's
    probe.wait("disconnected", timeout=15)
    probe.client.loop_stop()
    assert MqttProbe(allinone.mqtt_port, protocol=allinone.protocol).try_connect(device_id, old) != 0
    again = logged_in(allinone, device_id, new)

    device_set_enabled(device_id=device_id, enabled=False)
    again.wait("disconnected", timeout=15)
    again.client.loop_stop()
    assert MqttProbe(allinone.mqtt_port, protocol=allinone.protocol).try_connect(device_id, new) != 0


def test_simulate_against_the_all_in_one_connects_and_is_stored(allinone, live_db, run_id):
    env = stack_env(database_url=live_db, redis_url=None, mqtt_url=None, run_id=run_id)
    prefix = f"sim{run_id}"
    result = subprocess.run([sys.executable, "manage.py", "simulate", "--devices", "2", "--rate", "10",
                             "--duration", "3", "--prefix", prefix, "--mqtt-url", allinone.device_url],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    done = re.search(r"done: sent (\d+)\s+acked (\d+)", result.stdout)
    assert done and int(done[1]) > 0 and int(done[2]) == int(done[1]), result.stdout
    wait_until(lambda: Telemetry.objects.filter(device__id__startswith=prefix).count() >= int(done[2]),
               what="the simulated samples stored")


def test_simulate_with_mqtt_5_against_amqtt_fails_saying_why(live_db, processes, run_id):
    env = stack_env(database_url=live_db, redis_url=None, mqtt_url=None, run_id=run_id)
    gw = AllInOne(env=env, processes=processes, kind="amqtt").start()
    result = subprocess.run([sys.executable, "manage.py", "simulate", "--devices", "1", "--duration", "30",
                             "--prefix", f"v5{run_id}", "--mqtt-url", f"mqtt://127.0.0.1:{gw.mqtt_port}"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "Unsupported protocol version" in result.stderr and "protocol=3.1.1" in result.stderr, result.stderr


def test_a_taken_mqtt_port_stops_the_gateway_with_what_to_do(live_db, processes, run_id):
    env = stack_env(database_url=live_db, redis_url=None, mqtt_url=None, run_id=run_id)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        result = subprocess.run([sys.executable, "manage.py", "gateway", "--port", str(free_port()),
                                 "--mqtt-port", str(port)], cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=60)
    assert result.returncode != 0 and time.monotonic() - started < 30
    assert f"MQTT port {port}" in result.stderr and "MQTT_PORT" in result.stderr, result.stderr


def test_a_secret_issued_over_the_api_replaces_the_old_one_on_the_broker(allinone, registry, staff_token):
    owner = registry.user("owner")
    device_id, old = registry.device("api-rot", owner=owner)
    probe = logged_in(allinone, device_id, old)
    url = f"{allinone.web}/api/devices/{device_id}/secret"
    assert call("POST", url, token=registry.token(owner)).status == 403  # its owner sees it, but is not staff
    assert call("POST", f"{allinone.web}/api/devices/nope-{run_tag()}/secret", token=staff_token).status == 404

    reply = call("POST", url, token=staff_token)
    assert reply.status == 200, reply.body
    body = reply.json()
    assert body["id"] == body["mqtt_username"] == device_id and body["secret"] != old
    probe.wait("disconnected", timeout=15)  # the connection made with the old secret does not outlive it
    probe.client.loop_stop()
    assert MqttProbe(allinone.mqtt_port, protocol=allinone.protocol).try_connect(device_id, old) != 0
    logged_in(allinone, device_id, body["secret"]).close()


def run_tag() -> str:
    return uuid.uuid4().hex[:6]


def test_make_run_passes_the_mqtt_port_to_the_gateway():
    result = subprocess.run(["make", "-n", "run", "MQTT_PORT=18999", "PORT=18998"], cwd=ROOT, capture_output=True,
                            text=True, timeout=30)
    assert "gateway --host 127.0.0.1 --port 18998 --mqtt-port 18999" in result.stdout, result.stdout
