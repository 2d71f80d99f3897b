"""`simulate --transport coap`: simulated devices through aiocoap's client to a `coapserver`, answering commands."""

from __future__ import annotations

import sys

import pytest

from devices.models import Device, Telemetry
from devices.services.commands import command_issue
from testing.coap import CoapProcess
from testing.registry import wait_status
from testing.waiting import wait_until

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def test_simulated_coap_devices_store_samples_and_answer_a_command(stack, registry):
    coap = CoapProcess(stack).start()
    user = registry.user("simowner")
    prefix = f"csim{registry.tag}"
    sim = stack.processes.start("simulate", [
        sys.executable, "manage.py", "simulate", "--transport", "coap", "--coap-url", coap.url, "--devices", "3",
        "--rate", "30", "--prefix", prefix, "--owner", user.username, "--latency", "0", "--duration", "60"],
        stack.env)
    ids = [f"{prefix}-{i}" for i in (1, 2, 3)]
    wait_until(lambda: Telemetry.objects.filter(device_id__in=ids).count() >= 30 or not sim.alive(), timeout=30,
               what="simulated CoAP samples stored")
    assert sim.alive(), sim.output()
    wait_until(lambda: Device.objects.filter(pk=ids[0], transport="coap", online=True).exists(), timeout=15,
               what="the device online on CoAP")
    command = command_issue(user=user, device_id=ids[0], name="ping")
    wait_status(str(command.id), "succeeded", timeout=20)
    sim.stop(grace=15)
    assert "done: sent" in sim.output()
    wait_until(lambda: not Device.objects.get(pk=ids[0]).online, timeout=10, what="offline when the run ends")
    coap.stop()
