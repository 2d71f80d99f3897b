"""The registry: devices, their telemetry, API tokens and bridge heartbeats."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.validators import RegexValidator
from django.db import models

DEVICE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class Device(models.Model):
    """A registered device; its id is also its MQTT username."""

    id = models.CharField(primary_key=True, max_length=64, validators=[RegexValidator(DEVICE_ID_PATTERN)])
    name = models.CharField(max_length=200, blank=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    groups = models.ManyToManyField(Group, blank=True, related_name="devices")
    secret_hash = models.CharField(max_length=64, editable=False)
    enabled = models.BooleanField(default=True)
    online = models.BooleanField(default=False)
    last_seen = models.DateTimeField(null=True, blank=True)
    # {metric: {"value": v, "ts": iso}}: the newest value of every metric, by sample time.
    latest = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.id


class Telemetry(models.Model):
    """One sample: its time and its metrics; one row per (device, ts)."""

    id = models.BigAutoField(primary_key=True)
    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="telemetry", db_constraint=False)
    ts = models.DateTimeField()
    data = models.JSONField()
    received_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["device", "ts"], name="telemetry_once_per_device_ts")]
        verbose_name_plural = "telemetry"


class ApiToken(models.Model):
    """A bearer token for the HTTP and WebSocket APIs; only its SHA-256 is stored."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=16, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"


class BridgeHeartbeat(models.Model):
    """A bridge process's pulse and counters, written every few seconds."""

    client_id = models.CharField(primary_key=True, max_length=64)
    beat_at = models.DateTimeField()
    connected = models.BooleanField(default=False)
    counters = models.JSONField(default=dict)
