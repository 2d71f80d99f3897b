"""Settings → constructor keywords: the one place the long-lived objects' configuration is read.

The bridge, the dashboard consumer and the HTTP edge's live pushes take their configuration
as keywords with documented defaults (as channels_redis does); this module reads Django's
settings (themselves read from the environment by iotgw/env.py) once per process and passes
them on, so no hot path reads `settings.X`.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from devices.services.history import Retention
from protocols.consumers import DashboardConfig
from protocols.device_socket import DeviceSocketConfig


def bridge_options() -> dict[str, Any]:
    """The Bridge's keywords (bridge/runtime.py) except the broker and the layer."""
    return {
        "client_id": settings.MQTT_CLIENT_ID,
        "share_group": settings.MQTT_SHARE_GROUP,
        "session_expiry": settings.MQTT_SESSION_EXPIRY,
        "receive_maximum": settings.MQTT_RECEIVE_MAXIMUM,
        "max_batch": settings.IOTGW_MAX_BATCH,
        "max_payload": settings.IOTGW_MAX_PAYLOAD,
        "max_clock_skew": settings.IOTGW_MAX_CLOCK_SKEW,
        "push_buckets": settings.IOTGW_PUSH_BUCKETS,
        "push_interval": settings.IOTGW_PUSH_INTERVAL,
        "heartbeat_seconds": settings.IOTGW_HEARTBEAT_SECONDS,
        "offline_after": settings.IOTGW_OFFLINE_AFTER,
        "profile_refresh": settings.IOTGW_PROFILE_REFRESH,
        "sparkplug_host_id": settings.IOTGW_SPARKPLUG_HOST_ID,
        "ha_discovery": settings.IOTGW_HA_DISCOVERY,
        "ha_discovery_prefix": settings.IOTGW_HA_DISCOVERY_PREFIX,
        "ha_discovery_register": settings.IOTGW_HA_DISCOVERY_REGISTER,
        "retention": Retention(**retention()),
        "maintenance_seconds": settings.IOTGW_MAINTENANCE_SECONDS,
        "alarm_poll": settings.IOTGW_ALARM_POLL_SECONDS,
        "alarm_sweep": settings.IOTGW_ALARM_SWEEP_SECONDS,
        "rollup_seconds": settings.IOTGW_ROLLUP_SECONDS,
    }


def retention() -> dict[str, Any]:
    """The history tiers' retention (devices/services/history.py Retention's keywords)."""
    return {
        "raw_days": settings.IOTGW_RETENTION_RAW_DAYS,
        "minute_days": settings.IOTGW_RETENTION_MINUTE_DAYS,
        "hour_days": settings.IOTGW_RETENTION_HOUR_DAYS,
        "ahead_days": settings.IOTGW_PARTITIONS_AHEAD_DAYS,
    }


def coap_options() -> dict[str, Any]:
    """The CoapServer's keywords (coap/server.py) except the layer."""
    return {
        "client_id": settings.IOTGW_COAP_ID,
        "host": settings.IOTGW_COAP_HOST,
        "port": settings.IOTGW_COAP_PORT,
        "plain": settings.IOTGW_COAP_PLAIN,
        "rate": settings.IOTGW_COAP_RATE,
        "burst": settings.IOTGW_COAP_BURST,
        "commit_wait": settings.IOTGW_COAP_COMMIT_WAIT,
        "oscore_dir": settings.IOTGW_COAP_OSCORE_DIR,
        "max_batch": settings.IOTGW_MAX_BATCH,
        "max_payload": settings.IOTGW_MAX_PAYLOAD,
        "max_clock_skew": settings.IOTGW_MAX_CLOCK_SKEW,
        "push_buckets": settings.IOTGW_PUSH_BUCKETS,
        "push_interval": settings.IOTGW_PUSH_INTERVAL,
        "heartbeat_seconds": settings.IOTGW_HEARTBEAT_SECONDS,
        "offline_after": settings.IOTGW_OFFLINE_AFTER,
    }


def dashboard_config() -> DashboardConfig:
    """The dashboard socket's limits (protocols/consumers.py)."""
    return DashboardConfig(
        rate=settings.IOTGW_WS_RATE,
        burst=settings.IOTGW_WS_BURST,
        send_buffer=settings.IOTGW_WS_SEND_BUFFER,
        inbox=settings.IOTGW_WS_INBOX,
        rejoin_every=settings.IOTGW_PUSH_REJOIN_SECONDS,
        recheck_seconds=settings.IOTGW_WS_RECHECK_SECONDS,
        max_frame=settings.IOTGW_WS_MAX_FRAME,
        push_buckets=settings.IOTGW_PUSH_BUCKETS,
    )


def notify_options() -> dict[str, Any]:
    """The notification Sender's keywords (notify/sender.py)."""
    return {
        "interval": settings.IOTGW_NOTIFY_INTERVAL,
        "lease": settings.IOTGW_NOTIFY_LEASE,
        "timeout": settings.IOTGW_NOTIFY_TIMEOUT,
        "concurrency": settings.IOTGW_NOTIFY_CONCURRENCY,
        "max_attempts": settings.IOTGW_NOTIFY_MAX_ATTEMPTS,
        "retry_first": settings.IOTGW_NOTIFY_RETRY_FIRST,
        "retry_most": settings.IOTGW_NOTIFY_RETRY_MOST,
        "from_email": settings.DEFAULT_FROM_EMAIL or "",
        "allowed_hosts": settings.IOTGW_NOTIFY_HOSTS,
        "keep_days": settings.IOTGW_NOTIFY_KEEP_DAYS,
    }


def process_ingest_options() -> dict[str, Any]:
    """A web process's own pipeline (devices/inprocess.py), for WebSocket and HTTP devices."""
    return {
        "max_batch": settings.IOTGW_MAX_BATCH,
        "push_buckets": settings.IOTGW_PUSH_BUCKETS,
        "push_interval": settings.IOTGW_PUSH_INTERVAL,
    }


def device_socket_config() -> DeviceSocketConfig:
    """The WebSocket device socket's limits (protocols/device_socket.py)."""
    return DeviceSocketConfig(
        rate=settings.IOTGW_WS_RATE,
        burst=settings.IOTGW_WS_BURST,
        send_buffer=settings.IOTGW_WS_SEND_BUFFER,
        max_frame=settings.IOTGW_WS_MAX_FRAME,
        max_payload=settings.IOTGW_MAX_PAYLOAD,
        max_clock_skew=settings.IOTGW_MAX_CLOCK_SKEW,
        recheck_seconds=settings.IOTGW_WS_RECHECK_SECONDS,
        grace=settings.IOTGW_WS_DEVICE_GRACE,
        offline_after=settings.IOTGW_OFFLINE_AFTER,
        ingest=process_ingest_options(),
    )
