"""Commands survive a SIGKILLed bridge and a restarted broker: none lost, every state right (SPEC §5, §6)."""

from __future__ import annotations

import socket
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from devices.models import BridgeHeartbeat, Command, Device
from testing.http import json_call
from testing.mqtt import Responder
from testing.processes import free_port
from testing.registry import command_status, wait_status
from testing.waiting import wait_until

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def owner(registry):
    user = registry.user("owner")
    return user, registry.token(user)


def issue(stack, token: str, device_id: str, **fields) -> str:
    status, body = json_call("POST", f"{stack.web}/api/devices/{device_id}/commands", token,
                             {"name": "reboot", **fields})
    assert status == 202, body
    return body["id"]


def online(device_id: str) -> bool:
    return Device.objects.filter(pk=device_id, online=True).exists()


def history(command_id: str) -> list[str]:
    return [h["status"] for h in Command.objects.get(pk=command_id).history]


def test_bridge_killed_with_commands_queued_and_sent_loses_none(stack, registry, owner):
    user, token = owner
    awake_id, _ = registry.device("awake", owner=user)
    asleep_id, _ = registry.device("asleep", owner=user)
    stack.start_web()
    bridge = stack.start_bridge()
    awake = Responder(stack.mqtt_url, awake_id, answer=None)
    wait_until(lambda: online(awake_id), what="device online")

    sent = [issue(stack, token, awake_id, params={"n": i}, timeout=120) for i in range(3)]
    awake.wait_commands(3)
    for command_id in sent:
        wait_status(command_id, "sent")
    waiting_for_asleep = [issue(stack, token, asleep_id) for _ in range(2)]

    bridge.kill()  # SIGKILL: no clean disconnect, nothing flushed
    waiting_for_awake = [issue(stack, token, awake_id, timeout=120) for _ in range(2)]
    for command_id in sent:  # answered while no bridge runs: the broker keeps them for the bridge's session
        awake.respond(command_id, "ok", result=command_id)
    assert {command_status(c) for c in sent} == {"sent"}
    assert {command_status(c) for c in waiting_for_asleep + waiting_for_awake} == {"queued"}

    awake.answer = "ok"
    stack.start_bridge()
    for command_id in sent + waiting_for_awake:
        wait_status(command_id, "succeeded", timeout=30)
    assert [Command.objects.get(pk=c).result for c in sent] == sent
    asleep = Responder(stack.mqtt_url, asleep_id, answer="ok")
    for command_id in waiting_for_asleep:
        wait_status(command_id, "succeeded", timeout=30)

    for command_id in sent + waiting_for_awake + waiting_for_asleep:
        assert history(command_id) == ["queued", "sent", "succeeded"], command_id
    deliveries = Counter(c["id"] for c in awake.received + asleep.received)
    assert set(deliveries) == set(sent + waiting_for_awake + waiting_for_asleep)
    assert max(deliveries.values()) == 1, deliveries
    awake.close()
    asleep.close()


class PrivateBroker:
    """A Mosquitto of our own, with persistence, that the test may stop and start."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.conf = directory / "mosquitto.conf"
        self.log = directory / "mosquitto.log"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            f"persistence true\npersistence_location {directory}/\n"
        )
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(["mosquitto", "-c", str(self.conf)], stdout=self.log.open("ab"),
                                     stderr=subprocess.STDOUT)
        wait_until(self._listening, timeout=10, what="mosquitto listening")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: Mosquitto writes its persistence file and exits
            self.proc.wait(10)

    def _listening(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text()
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False


def bridge_connected(stack) -> bool:
    beat = BridgeHeartbeat.objects.filter(client_id=stack.env["MQTT_CLIENT_ID"]).first()
    return beat is not None and beat.connected


def test_commands_issued_while_the_broker_restarts_go_out_after_the_reconnect(stack, registry, owner, tmp_path):
    user, token = owner
    device_id, _ = registry.device("steady", owner=user)
    broker = PrivateBroker(tmp_path)
    broker.start()
    try:
        stack.env["MQTT_URL"] = stack.mqtt_url = broker.url
        stack.start_web()
        stack.start_bridge()
        device = Responder(broker.url, device_id, answer="ok")
        wait_until(lambda: online(device_id), what="device online")
        wait_status(issue(stack, token, device_id), "succeeded")

        broker.stop()
        wait_until(lambda: not bridge_connected(stack), what="bridge saw the broker go")
        during = [issue(stack, token, device_id, params={"n": i}) for i in range(3)]
        assert {command_status(c) for c in during} == {"queued"}

        broker.start()
        for command_id in during:
            wait_status(command_id, "succeeded", timeout=60)
            assert history(command_id) == ["queued", "sent", "succeeded"]
        assert [c["params"] for c in device.received[-3:]] == [{"n": 0}, {"n": 1}, {"n": 2}]
        device.close()
    finally:
        broker.stop()
