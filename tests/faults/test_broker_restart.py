"""A broker restart loses none of the samples the restarted broker acknowledged (SPEC §5).

The worst moment: the device is back before the bridge and publishes at once. Mosquitto 2.0
restores a persistent session with its plain subscriptions but not a `$share/…` one, so with
a shared subscription these samples match nobody and are acknowledged and discarded (this
test stored 1 of 101 then); the single bridge's plain `devices/#` is restored and queues them.
"""

from __future__ import annotations

import signal

import pytest
from django.db.models import Count

from devices.models import Telemetry
from testing.mqtt import MqttDevice
from testing.waiting import wait_until

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

BASE_TS = 1767225600000
AFTER = 100
SAVED = "Saving in-memory database"


def stored(device_id: str) -> int:
    return Telemetry.objects.filter(device_id=device_id).count()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_samples_published_before_the_bridge_is_back_are_stored(stack, registry, private_broker, sig):
    device_id, _ = registry.device("restart")
    stack.env["MQTT_URL"] = private_broker.url
    stack.env.pop("MQTT_SHARE_GROUP")  # one bridge: the default deployment
    bridge = stack.start_bridge()
    first = MqttDevice(private_broker.url, device_id)
    first.telemetry({"ts": BASE_TS, "n": -1})
    wait_until(lambda: stored(device_id) == 1, what="a sample before the restart")
    first.close()
    if sig == signal.SIGKILL:
        # A killed Mosquitto comes back with its last complete save (autosave_interval 1): wait for one that
        # holds the bridge's session and subscription, as a broker running for more than a second has. The log
        # line comes as a save starts, so the second line after now means the first one has been written.
        saves = private_broker.log.count(SAVED)
        wait_until(lambda: private_broker.log.count(SAVED) > saves + 1, timeout=10, what="the broker saved its state")

    bridge.freeze()  # the bridge cannot come back before the device
    private_broker.stop() if sig == signal.SIGTERM else private_broker.kill()
    private_broker.start()
    device = MqttDevice(private_broker.url, device_id)
    for i in range(AFTER):
        device.telemetry({"ts": BASE_TS + 1 + i, "n": i})  # each one acknowledged by the restarted broker
    bridge.thaw()

    wait_until(lambda: stored(device_id) == 1 + AFTER, timeout=60,
               what=f"the {AFTER} samples the restarted broker acknowledged")
    assert not Telemetry.objects.filter(device_id=device_id).values("ts").annotate(n=Count("ts")).filter(n__gt=1)
    device.close()
