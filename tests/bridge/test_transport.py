"""The MQTT transport on its own: QoS 0 shed past the backlog, the dialect decoding a read, a command as a publish."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from bridge.mqtt.codec import Raw
from bridge.transport import MqttTransport, shed_qos0
from core.broker import BrokerConfig
from core.dialect import IotgwDecoder, command_message
from core.transport import Outbound, Rejected, Said, decode_one
from devices.pipeline import Intake
from devices.stats import IngestStats

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_qos0_is_shed_only_past_the_backlog_and_qos1_never():
    raws = [Raw("t", b"", 0, 0, 1), Raw("t", b"", 1, 7, 1), Raw("t", b"", 0, 0, 1)]
    assert shed_qos0(raws, waiting=2, backlog=2) == raws
    assert shed_qos0(raws, waiting=3, backlog=2) == [raws[1]]


def test_a_read_is_decoded_by_the_transports_dialect_one_message_at_a_time():
    transport = MqttTransport(BrokerConfig.from_url("mqtt://127.0.0.1:1"), sink=Intake(), stats=IngestStats(),
                              decoder=IotgwDecoder(max_payload=100), client_id="t", subscriptions=[])
    decoded = [decode_one(transport.decoder, raw, received_at=NOW) for raw in [
        Raw("devices/d1/telemetry", b'{"ts": 1767225600000, "v": 1}', 1, 1, 1),
        Raw("devices/d1/status", b"online", 1, 2, 1),
        Raw("devices/d1/commands", b"{}", 1, 3, 1),  # the bridge's own publish, come back: says nothing
        Raw("devices/d1/telemetry", b"[" + b"1," * 80 + b"1]", 1, 4, 1),
        Raw("elsewhere/x", b"{}", 0, 0, 1),
    ]]
    assert [s.data for s in decoded[0][0].samples] == [{"v": 1}]
    assert decoded[1] == [Said("d1", online=True)] and decoded[2] == []
    assert decoded[3] == Rejected("d1", "too_large", "payload of 163 bytes is over the 100-byte limit")
    assert isinstance(decoded[4], Rejected) and decoded[4].reason == "bad_topic"


def test_a_command_goes_out_on_the_devices_commands_topic_with_its_reply_properties():
    command_id = uuid.uuid4()
    message = command_message(Outbound(command_id=command_id, device_id="d1", name="ping", params={},
                                       expires_at=NOW))
    assert message.topic == "devices/d1/commands" and message.response_topic == "devices/d1/commands/response"
    assert message.correlation_data == str(command_id).encode() and b'"name":"ping"' in message.payload
