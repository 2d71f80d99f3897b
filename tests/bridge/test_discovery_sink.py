"""The discovery sink alone: configs are set aside, everything else reaches the pipeline as it came."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.discovery import Discovery, DiscoverySink
from core.router import ProfileRouter
from devices.stats import IngestStats


@dataclass
class Msg:
    topic: str
    payload: bytes = b""


class Intake:
    def __init__(self) -> None:
        self.got: list[list[Msg]] = []

    def offer(self, inlet, envelopes) -> None:
        self.got.append(list(envelopes))

    def __len__(self) -> int:
        return sum(map(len, self.got))


async def test_configs_go_aside_and_the_rest_to_the_pipeline_in_order():
    intake = Intake()
    discovery = Discovery(router=ProfileRouter(), stats=IngestStats(), prefix="ha")
    sink = DiscoverySink(intake, discovery)
    plain = [Msg("devices/a/telemetry"), Msg("tele/b/SENSOR")]
    sink.offer(None, plain)
    sink.offer(None, [Msg("devices/a/telemetry"), Msg("ha/sensor/x/config"), Msg("hax/sensor/x/config"),
                      Msg("ha/status")])
    assert intake.got == [plain, [Msg("devices/a/telemetry"), Msg("hax/sensor/x/config"), Msg("ha/status")]]
    assert discovery._queue.qsize() == 1 and len(sink) == 5
