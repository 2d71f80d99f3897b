"""Handing the MQTT client's messages to the ingestor: a whole socket read in one call."""

from __future__ import annotations

from bridge import ingest
from bridge.ingest import Ingestor
from bridge.mqtt.codec import Raw
from bridge.stats import BridgeStats


def _ingestor() -> Ingestor:
    return Ingestor(layer=None, stats=BridgeStats(), ack=lambda raws: None, max_batch=10, max_payload=1000)


async def test_offer_many_queues_a_whole_read_and_wakes_the_loop():
    ingestor = _ingestor()
    raws = [Raw("devices/d/telemetry", b"{}", 1, i, 1) for i in range(1, 4)]
    ingestor.offer_many(raws)
    assert list(ingestor._inbox) == raws and ingestor._wake.is_set()


async def test_offer_many_drops_qos0_past_the_backlog_but_keeps_qos1(monkeypatch):
    monkeypatch.setattr(ingest, "QOS0_BACKLOG", 2)
    ingestor = _ingestor()
    ingestor.offer_many([Raw("t", b"", 0, 0, 1) for _ in range(3)])
    ingestor.offer_many([Raw("t", b"", 0, 0, 1), Raw("t", b"", 1, 7, 1)])
    assert [raw.qos for raw in ingestor._inbox] == [0, 0, 0, 1]
    assert ingestor._stats.counts["dropped_qos0"] == 1
