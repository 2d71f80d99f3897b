"""Prometheus metrics: this process's own, plus every live bridge's counters from its heartbeat."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone
from prometheus_client import REGISTRY, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from devices.models import BridgeHeartbeat

BRIDGE_STALE_AFTER = timedelta(seconds=60)

websockets_open = Gauge("iotgw_websockets_open", "Dashboard WebSockets open in this web process")


class BridgeCollector:
    """Exports the counters that bridges publish in their heartbeats (they may run elsewhere)."""

    def describe(self):
        # Without this, registering would call collect() (a query) at import time.
        return []

    def collect(self):
        received = CounterMetricFamily("iotgw_messages_received", "Device messages received", labels=["bridge"])
        stored = CounterMetricFamily("iotgw_samples_ingested", "Samples committed to the database", labels=["bridge"])
        rejected = CounterMetricFamily(
            "iotgw_messages_rejected", "Device messages rejected, by reason", labels=["bridge", "reason"]
        )
        connected = GaugeMetricFamily("iotgw_bridge_connected", "1 when the bridge holds a broker connection",
                                      labels=["bridge"])
        since = timezone.now() - BRIDGE_STALE_AFTER
        for beat in BridgeHeartbeat.objects.filter(beat_at__gte=since):
            counters = beat.counters
            received.add_metric([beat.client_id], counters.get("received", 0))
            stored.add_metric([beat.client_id], counters.get("samples_stored", 0))
            for reason, count in counters.get("rejected", {}).items():
                rejected.add_metric([beat.client_id, reason], count)
            connected.add_metric([beat.client_id], 1 if beat.connected else 0)
        yield from (received, stored, rejected, connected)


REGISTRY.register(BridgeCollector())
