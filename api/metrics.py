"""Prometheus metrics of the HTTP edge, plus every known bridge's counters from its heartbeat and command counts.

The WebSocket edge registers its own (protocols/metrics.py) in the same registry: /metrics shows both.
"""

from __future__ import annotations

import math
import threading
import time

from django.conf import settings
from django.utils import timezone
from prometheus_client import REGISTRY, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from devices.inprocess import process_ingests
from devices.selectors import bridges_known

http_samples_ingested = Counter("iotgw_http_samples_ingested", "Samples committed through HTTP ingest")
http_rejected = Counter("iotgw_http_rejected", "HTTP ingest requests rejected, by reason", ["reason"])


def bridge_timing() -> dict[str, float]:
    """What makes a bridge live and how long its session outlives it (IOTGW_HEARTBEAT_SECONDS, MQTT_SESSION_EXPIRY)."""
    return {"heartbeat_seconds": settings.IOTGW_HEARTBEAT_SECONDS, "session_expiry": settings.MQTT_SESSION_EXPIRY}


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
        latency = HistogramMetricFamily("iotgw_ingest_latency_seconds",
                                        "Receive → commit time of the device messages a bridge stored",
                                        labels=["bridge"])
        live = GaugeMetricFamily("iotgw_bridge_live", "1 while the bridge's heartbeat is fresh; 0 for a silent "
                                 "bridge whose broker session may still collect messages", labels=["bridge"])
        age = GaugeMetricFamily("iotgw_bridge_heartbeat_age_seconds", "Seconds since the bridge's last heartbeat",
                                labels=["bridge"])
        coap = GaugeMetricFamily("iotgw_coap_listening", "1 while a CoAP process's heartbeat is fresh and its UDP "
                                 "listener is up (its counters are in the other families under its name)",
                                 labels=["process"])
        events = CounterMetricFamily("iotgw_profile_events", "What stateful profiles counted, by event (Sparkplug: "
                                     "seq gaps, rebirth requests, stale deaths, metrics skipped by why)",
                                     labels=["bridge", "event"])
        now = timezone.now()
        for bridge in bridges_known(**bridge_timing()):
            if bridge.counters.get("transport") == "coap":
                coap.add_metric([bridge.client_id], 1 if bridge.connected and bridge.live else 0)
            counters, name = bridge.counters, bridge.client_id
            received.add_metric([name], counters.get("received", 0))
            stored.add_metric([name], counters.get("samples_stored", 0))
            for reason, count in counters.get("rejected", {}).items():
                rejected.add_metric([name, reason], count)
            for event, count in counters.get("profile_events", {}).items():
                events.add_metric([name, event], count)
            connected.add_metric([name], 1 if bridge.connected and bridge.live else 0)
            live.add_metric([name], 1 if bridge.live else 0)
            age.add_metric([name], (now - bridge.beat_at).total_seconds())
            histogram = counters.get("latency", {})
            if "counts" in histogram:  # a bridge of an older version sent quantiles instead
                bounds = [*(floatToGoString(le) for le in histogram["le"]), "+Inf"]
                latency.add_metric([name], list(zip(bounds, histogram["counts"], strict=True)),
                                   sum_value=histogram["sum"])
        yield from (received, stored, rejected, connected, latency, live, age, coap, events)


class CommandCollector:
    """Commands by status, counted in the database (so every web process reports the same).

    The count is a scan of the command table, so it runs at most once per `every` seconds
    per process, however often and by how many scrapers /metrics is read; in between the
    last counts are served. A gauge seen by a 15-60 s scrape loses nothing by being that old,
    and, unlike counters kept in the command transactions, it costs the command path
    nothing and cannot drift.
    """

    def __init__(self, *, every: float | None = None) -> None:
        self.every = every
        self._counts: dict[str, int] | None = None
        self._counted_at = -math.inf
        self._lock = threading.Lock()

    def describe(self):
        return []

    def counts(self) -> dict[str, int] | None:
        """Commands per status, as of at most `every` seconds ago; None while the database cannot say."""
        every = settings.IOTGW_METRICS_COUNT_SECONDS if self.every is None else self.every
        with self._lock:
            if time.monotonic() - self._counted_at >= every:
                self._counts = _count_commands()
                self._counted_at = time.monotonic() if self._counts is not None else -math.inf
            return self._counts

    def collect(self):
        family = GaugeMetricFamily("iotgw_commands", "Commands by status (recounted at most every "
                                   "IOTGW_METRICS_COUNT_SECONDS)", labels=["status"])
        counts = self.counts()
        if counts is None:  # /metrics still answers while the database is away
            return
        from devices.models import Command

        for status, _label in Command.STATUSES:
            family.add_metric([status], counts.get(status, 0))
        yield family


def _count_commands() -> dict[str, int] | None:
    from django.db import DatabaseError
    from django.db.models import Count

    from devices.models import Command

    try:
        return dict(Command.objects.values_list("status").annotate(n=Count("pk")).order_by())
    except DatabaseError:
        return None


class NotificationCollector:
    """Notifications sent, failed and retried per channel kind, and pending now, from the database (any process
    may have sent them)."""

    def describe(self):
        return []

    def collect(self):
        from django.db import DatabaseError

        from notify.selectors import notification_counts, senders_live

        try:
            counts, live = notification_counts(), senders_live()
        except DatabaseError:  # /metrics still answers while the database is away
            return
        labels = ["channel_kind"]
        sent = CounterMetricFamily("iotgw_notifications_sent", "Notifications delivered", labels=labels)
        failed = CounterMetricFamily("iotgw_notifications_failed", "Notifications given up on (out of tries, "
                                     "or refused for good)", labels=labels)
        retried = CounterMetricFamily("iotgw_notifications_retried", "Notification tries that failed and will be "
                                      "tried again", labels=labels)
        pending = GaugeMetricFamily("iotgw_notifications_pending", "Notifications waiting to be sent",
                                    labels=labels)
        for kind, c in counts.items():
            sent.add_metric([kind], c.sent)
            failed.add_metric([kind], c.failed)
            retried.add_metric([kind], c.retried)
            pending.add_metric([kind], c.pending)
        senders = GaugeMetricFamily("iotgw_notify_senders_live", "Notification senders with a fresh heartbeat")
        senders.add_metric([], live)
        yield from (sent, failed, retried, pending, senders)


class HistoryCollector:
    """Rows, bytes and the oldest sample per history tier (docs/history.md), re-read at most every
    IOTGW_METRICS_COUNT_SECONDS per process, like the command counts."""

    def __init__(self) -> None:
        self._stats: list | None = None
        self._read_at = -math.inf
        self._lock = threading.Lock()

    def describe(self):
        return []

    def stats(self) -> list | None:
        """The tiers' sizes, as of at most IOTGW_METRICS_COUNT_SECONDS ago; None while the database cannot say."""
        from django.db import DatabaseError

        from devices.aggregates import history_tier_stats

        with self._lock:
            if time.monotonic() - self._read_at >= settings.IOTGW_METRICS_COUNT_SECONDS:
                try:
                    self._stats, self._read_at = history_tier_stats(), time.monotonic()
                except DatabaseError:
                    self._stats, self._read_at = None, -math.inf
            return self._stats

    def collect(self):
        stats = self.stats()
        if stats is None:
            return
        rows = GaugeMetricFamily("iotgw_history_rows", "Rows per history tier (PostgreSQL: the planner's "
                                 "estimate, summed over the partitions)", labels=["tier"])
        size = GaugeMetricFamily("iotgw_history_bytes", "Bytes per history tier, tables and indexes "
                                 "(PostgreSQL only)", labels=["tier"])
        oldest = GaugeMetricFamily("iotgw_history_oldest_timestamp_seconds", "Time of the oldest row per tier "
                                   "(PostgreSQL: the start of the oldest partition holding one)", labels=["tier"])
        for tier in stats:
            rows.add_metric([tier.tier], tier.rows)
            if tier.bytes is not None:
                size.add_metric([tier.tier], tier.bytes)
            if tier.oldest is not None:
                oldest.add_metric([tier.tier], tier.oldest.timestamp())
        yield from (rows, size, oldest)


class AlarmCollector:
    """Alarm transitions by kind (raised, acknowledged, retriggered, cleared) and open alarms by severity, counted
    in the database (every process sees every bridge's), at most every IOTGW_METRICS_COUNT_SECONDS."""

    def __init__(self) -> None:
        self._counts: tuple[dict[str, int], dict[str, int]] | None = None
        self._counted_at = -math.inf
        self._lock = threading.Lock()

    def describe(self):
        return []

    def collect(self):
        from django.db import DatabaseError

        from alarms.selectors import alarm_metrics

        with self._lock:
            if time.monotonic() - self._counted_at >= settings.IOTGW_METRICS_COUNT_SECONDS:
                try:
                    self._counts, self._counted_at = alarm_metrics(), time.monotonic()
                except DatabaseError:
                    self._counts, self._counted_at = None, -math.inf
            counts = self._counts
        if counts is None:
            return
        transitions = CounterMetricFamily("iotgw_alarm_transitions", "Alarm transitions stored, by kind "
                                          "(raised and cleared: alarms raised and cleared)", labels=["kind"])
        open_ = GaugeMetricFamily("iotgw_alarms_open", "Open (active or acknowledged) alarms, by severity",
                                  labels=["severity"])
        for kind in ("raised", "acknowledged", "retriggered", "cleared"):
            transitions.add_metric([kind], counts[0].get(kind, 0))
        for severity in ("critical", "major", "minor", "warning", "info"):
            open_.add_metric([severity], counts[1].get(severity, 0))
        yield from (transitions, open_)


commands_collector = CommandCollector()
history_collector = HistoryCollector()
alarms_collector = AlarmCollector()

class WebIngestCollector:
    """This web process's own pipeline (WebSocket and HTTP devices: devices/inprocess.py), per transport."""

    def describe(self):
        return []

    def collect(self):
        stored = CounterMetricFamily("iotgw_web_samples_stored", "Samples this web process committed, by the "
                                     "transport that brought them (ws, http)", labels=["transport"])
        transactions = CounterMetricFamily("iotgw_web_transactions", "Ingest transactions of this web process "
                                           "(many devices' frames and requests share one)")
        waiting = GaugeMetricFamily("iotgw_web_intake_waiting", "Frames and requests waiting for this web "
                                    "process's next batch")
        rejected = CounterMetricFamily("iotgw_web_rejected", "Frames and requests this web process refused, by "
                                       "reason", labels=["reason"])
        latency = HistogramMetricFamily("iotgw_web_ingest_latency_seconds",
                                        "Receive → commit time of what this web process stored")
        ingests = process_ingests()
        for transport in sorted({t for ingest in ingests for t in ingest.stored_by} | {"ws", "http"}):
            stored.add_metric([transport], sum(ingest.stored_by[transport] for ingest in ingests))
        transactions.add_metric([], sum(ingest.stats.counts["transactions"] for ingest in ingests))
        waiting.add_metric([], sum(len(ingest.intake) for ingest in ingests))
        reasons: dict[str, int] = {}
        for ingest in ingests:
            for reason, count in ingest.stats.rejected.items():
                reasons[reason] = reasons.get(reason, 0) + count
        for reason, count in sorted(reasons.items()):
            rejected.add_metric([reason], count)
        if ingests:
            histogram = ingests[0].stats.latency_histogram()
            bounds = [*(floatToGoString(le) for le in histogram["le"]), "+Inf"]
            latency.add_metric([], list(zip(bounds, histogram["counts"], strict=True)), sum_value=histogram["sum"])
        yield from (stored, transactions, waiting, rejected, latency)


REGISTRY.register(BridgeCollector())
REGISTRY.register(commands_collector)
REGISTRY.register(history_collector)
REGISTRY.register(WebIngestCollector())
REGISTRY.register(NotificationCollector())
REGISTRY.register(alarms_collector)
