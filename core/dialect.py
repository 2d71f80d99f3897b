"""The iotgw dialect (SPEC §4, §6): `devices/{id}/…` topics with JSON payloads, as a Decoder and a command encoder.

Pure: the MQTT edge runs it inside its batches; another dialect (a device profile) is
another Decoder with its own command encoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from core.payloads import parse_samples, parse_status
from core.times import DEFAULT_MAX_SKEW
from core.topics import COMMAND_RESPONSE, COMMANDS, STATUS, TELEMETRY, device_topic, parse_topic, source_of
from core.transport import Outbound, Said
from core.wire import command_payload, parse_command_response


class IotgwDecoder:
    """Decodes `devices/{id}/telemetry|status|commands/response`; a bridge's own `commands` echo says nothing."""

    def __init__(self, *, max_payload: int, max_skew: timedelta = DEFAULT_MAX_SKEW) -> None:
        self.max_payload = max_payload
        self.max_skew = max_skew

    def __call__(self, topic: str, payload: bytes, *, received_at: datetime) -> list[Said]:
        device_id, kind = parse_topic(topic)
        if kind == TELEMETRY:
            samples = parse_samples(payload, received_at=received_at, max_bytes=self.max_payload,
                                    max_skew=self.max_skew)
            return [Said(device_id, samples=samples)]
        if kind == STATUS:
            return [Said(device_id, online=parse_status(payload))]
        if kind == COMMAND_RESPONSE:
            return [Said(device_id, response=parse_command_response(payload, max_bytes=self.max_payload))]
        assert kind == COMMANDS
        return []

    def source(self, topic: str) -> str:
        return source_of(topic)


@dataclass(frozen=True, slots=True)
class CommandMessage:
    """A command as the iotgw dialect publishes it: topic, payload, and the MQTT v5 reply properties."""

    topic: str
    payload: bytes
    response_topic: str | None = None  # MQTT v5 request/response; a profile's command has none
    correlation_data: bytes | None = None


def command_message(command: Outbound) -> CommandMessage:
    """`devices/{id}/commands` with the command's JSON; Response Topic and Correlation Data for v5 devices."""
    return CommandMessage(
        topic=device_topic(command.device_id, COMMANDS),
        payload=command_payload(command_id=str(command.command_id), name=command.name, params=command.params,
                                expires_at=command.expires_at),
        response_topic=device_topic(command.device_id, COMMAND_RESPONSE),
        correlation_data=str(command.command_id).encode(),
    )
