"""A Sparkplug B edge node (a real paho client) through the real Mosquitto and a real bridge on the `sparkplug` profile:
births with aliases, data by alias, a seq gap answered by a rebirth request, a DCMD write confirmed by DATA, and the
NDEATH will taking the node and its device offline."""

from __future__ import annotations

import json
import uuid

import paho.mqtt.client as mqtt
import pytest

from core.broker import BrokerConfig
from core.sparkplug.sparkplug_b_pb2 import DataType
from devices.models import BridgeHeartbeat, Command, Device, Telemetry
from devices.services.commands import command_issue
from devices.services.profiles import device_register_child, device_set_profile, profile_save
from testing.sparkplug import MqttEdgeNode
from testing.waiting import wait_until

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

GROUP = "Plant1"


@pytest.fixture
def ops(registry):
    return registry.user("ops", staff=True)


def stored(device_id: str, **data) -> Telemetry:
    def found():
        return next((row for row in Telemetry.objects.filter(device_id=device_id).order_by("ts")
                     if all(row.data.get(k) == v for k, v in data.items())), None)

    return wait_until(found, what=f"a sample of {device_id} with {data}")


def online(device_id: str, state: bool = True) -> None:
    wait_until(lambda: Device.objects.get(pk=device_id).online is state, what=f"{device_id} online={state}")


def rebirth(payload) -> bool:
    return any(m.name == "Node Control/Rebirth" and m.boolean_value for m in payload.metrics)


@pytest.fixture
def edge(stack, registry):
    """An edge node registered on the sparkplug profile, with one device, and the bridge following profiles."""
    node_id, _ = registry.device(f"{GROUP}.Edge")  # `<group>.<edge node>`: the edge node is `Edge-<tag>`
    device_set_profile(device_id=node_id, profile="sparkplug")
    pump = device_register_child(gateway_id=node_id, child_name="Pump 7").id
    stack.start_bridge(IOTGW_PROFILE_REFRESH="0.5")
    node = MqttEdgeNode(stack.mqtt_url, group=GROUP, edge=node_id.split(".", 1)[1], bdseq=3)
    yield node, node_id, pump
    node.close()


def test_an_edge_node_and_its_device_end_to_end(edge, ops):
    node, node_id, pump = edge
    node.publish("NBIRTH", node.node.nbirth([
        {"name": "Properties/Hardware Make", "datatype": DataType.String, "value": "Acme"}]))
    node.publish("DBIRTH", node.node.next([
        {"name": "Inputs/Temperature", "alias": 10, "datatype": DataType.Float, "value": 21.5},
        {"name": "Outputs/Run", "alias": 11, "datatype": DataType.Boolean, "value": False}]), device="Pump 7")
    stored(node_id, **{"Properties.Hardware_Make": "Acme"})
    online(node_id)
    online(pump)

    node.publish("DDATA", node.node.next([{"alias": 10, "value": 22.5}]), device="Pump 7")  # by alias alone
    assert stored(pump, **{"Inputs.Temperature": 22.5}).data == {"Inputs.Temperature": 22.5}

    node.node.skip()  # a message lost: the next one's seq shows a gap, and the gateway asks for a rebirth
    node.publish("DDATA", node.node.next([{"alias": 10, "value": 23.5}]), device="Pump 7")
    node.wait_command(node.topic("NCMD"), match=rebirth)
    stored(pump, **{"Inputs.Temperature": 23.5})  # the data of the message after the gap is kept
    wait_until(lambda: any(b.counters.get("profile_events", {}).get("sparkplug_seq_gap") == 1
                           for b in BridgeHeartbeat.objects.all()), what="the gap counted in the heartbeat")

    command = command_issue(user=ops, device_id=pump, name="write", params={"Outputs.Run": True})
    written = node.wait_command(node.topic("DCMD", "Pump 7"))
    assert [(m.name, m.datatype, m.boolean_value) for m in written.metrics] == [("Outputs/Run", DataType.Boolean,
                                                                                 True)]
    wait_until(lambda: Command.objects.get(pk=command.id).status == "sent", what="the command sent")
    node.publish("DDATA", node.node.next([{"alias": 11, "value": True}]), device="Pump 7")  # the write applied
    wait_until(lambda: Command.objects.get(pk=command.id).status == "succeeded", what="the write confirmed")
    assert Command.objects.get(pk=command.id).result == {"confirmed": {"Outputs.Run": True}}

    node.die()  # the broker publishes its will: the NDEATH with the NBIRTH's bdSeq
    online(node_id, False)
    online(pump, False)


def test_data_before_a_birth_asks_for_a_rebirth(edge):
    node, node_id, _pump = edge
    node.node.seq = 41  # the gateway came up while the node was mid-session
    node.publish("NDATA", node.node.next([{"alias": 1, "value": 5}]))
    node.wait_command(node.topic("NCMD"), match=rebirth)
    assert not Telemetry.objects.filter(device_id=node_id).exists()


def test_the_bridge_as_primary_host_keeps_a_retained_state_and_its_will_says_offline(stack):
    host = f"iotgw-{uuid.uuid4().hex[:6]}"
    bridge = stack.start_bridge(IOTGW_SPARKPLUG_HOST_ID=host)
    seen: list[tuple[dict, bool]] = []
    watcher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"scada-{host}", protocol=mqtt.MQTTv311)
    watcher.on_message = lambda _c, _u, msg: msg.payload and seen.append((json.loads(msg.payload), msg.retain))
    config = BrokerConfig.from_url(stack.mqtt_url)
    watcher.connect(config.host, config.port)
    watcher.loop_start()
    try:
        watcher.subscribe(f"spBv1.0/STATE/{host}", qos=1)  # as an edge node does: the retained STATE first
        birth, retained = wait_until(lambda: seen and seen[0], what="the host's STATE")
        assert birth["online"] is True and retained
        bridge.kill()  # no DISCONNECT: the broker publishes the will
        death, _ = wait_until(lambda: len(seen) > 1 and seen[1], what="the host's STATE death")
        assert death == {"online": False, "timestamp": birth["timestamp"]}  # the birth's timestamp, as 3.0 says
    finally:
        watcher.publish(f"spBv1.0/STATE/{host}", b"", qos=1, retain=True).wait_for_publish(10)  # clear it
        watcher.loop_stop()
        watcher.disconnect()


def test_devices_an_edge_node_announces_become_its_children_when_its_profile_says_so(stack, registry):
    """`create_children`: a DBIRTH of a device nobody registered creates it as the node's child; without the
    setting (the built-in profile) the same device is refused, and no row appears for it."""
    profile_save(name="sparkplug-open", kind="sparkplug", spec={"create_children": True})
    open_id, _ = registry.device(f"{GROUP}.Open")
    closed_id, _ = registry.device(f"{GROUP}.Closed")
    device_set_profile(device_id=open_id, profile="sparkplug-open")
    device_set_profile(device_id=closed_id, profile="sparkplug")
    stack.start_bridge(IOTGW_PROFILE_REFRESH="0.5")
    nodes = [MqttEdgeNode(stack.mqtt_url, group=GROUP, edge=node_id.split(".", 1)[1], bdseq=1)
             for node_id in (open_id, closed_id)]
    try:
        for node in nodes:
            node.publish("NBIRTH", node.node.nbirth([{"name": "Up", "datatype": DataType.Boolean, "value": True}]))
            node.publish("DBIRTH", node.node.next([
                {"name": "Flow", "alias": 5, "datatype": DataType.Double, "value": 1.5}]), device="Valve 2")
            node.publish("DDATA", node.node.next([{"alias": 5, "value": 2.5}]), device="Valve 2")
        valve = wait_until(lambda: Device.objects.filter(gateway_id=open_id, child_name="Valve 2").first(),
                           what="the announced device created as the node's child")
        assert valve.profile_id == "sparkplug-open"
        stored(valve.id, Flow=2.5)
        online(valve.id)
        stored(closed_id, Up=True)  # the other node's own data is in, after its DBIRTH and DDATA were read
        wait_until(lambda: any(b.counters.get("rejected", {}).get("unknown_device")
                               for b in BridgeHeartbeat.objects.all()), what="the unregistered device refused")
        assert not Device.objects.filter(gateway_id=closed_id).exists()
    finally:
        for node in nodes:
            node.close()
