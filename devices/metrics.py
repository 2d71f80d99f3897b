"""Prometheus metrics: this process's own, plus every live bridge's counters from its heartbeat."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone
from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from devices.models import BridgeHeartbeat

BRIDGE_STALE_AFTER = timedelta(seconds=60)

websockets_open = Gauge("iotgw_websockets_open", "Dashboard WebSockets open in this web process")
websockets_closed = Counter("iotgw_websockets_closed", "Dashboard WebSockets closed by the gateway, by reason",
                            ["reason"])
ws_push_dropped = Counter("iotgw_ws_push_dropped", "Push messages dropped for dashboards that fell behind "
                          "(their inbox in this web process was full)")
ws_push_skipped = Counter("iotgw_ws_push_skipped", "Pushes not sent to dashboards whose client had fallen "
                          "behind (over IOTGW_WS_SEND_BUFFER unsent bytes); each gets a snapshot once drained")
http_samples_ingested = Counter("iotgw_http_samples_ingested", "Samples committed through HTTP ingest")
http_rejected = Counter("iotgw_http_rejected", "HTTP ingest requests rejected, by reason", ["reason"])


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
        latency = GaugeMetricFamily("iotgw_ingest_latency_seconds",
                                    "Receive → commit time of the bridge's batches over the last minute",
                                    labels=["bridge", "quantile"])
        since = timezone.now() - BRIDGE_STALE_AFTER
        for beat in BridgeHeartbeat.objects.filter(beat_at__gte=since):
            counters = beat.counters
            received.add_metric([beat.client_id], counters.get("received", 0))
            stored.add_metric([beat.client_id], counters.get("samples_stored", 0))
            for reason, count in counters.get("rejected", {}).items():
                rejected.add_metric([beat.client_id, reason], count)
            connected.add_metric([beat.client_id], 1 if beat.connected else 0)
            for quantile, key in (("0.5", "p50"), ("0.99", "p99")):
                if key in counters.get("latency", {}):
                    latency.add_metric([beat.client_id, quantile], counters["latency"][key])
        yield from (received, stored, rejected, connected, latency)


class CommandCollector:
    """Commands by status, counted in the database (so every web process reports the same)."""

    def describe(self):
        return []

    def collect(self):
        from django.db import DatabaseError
        from django.db.models import Count

        from devices import models

        family = GaugeMetricFamily("iotgw_commands", "Commands by status", labels=["status"])
        command = getattr(models, "Command", None)
        if command is not None:
            try:
                counts = dict(command.objects.values_list("status").annotate(n=Count("pk")).order_by())
            except DatabaseError:  # /metrics still answers while the database is away
                return
            for status, _label in getattr(command, "STATUSES", [(s, s) for s in counts]):
                family.add_metric([status], counts.get(status, 0))
        yield family


REGISTRY.register(BridgeCollector())
REGISTRY.register(CommandCollector())
