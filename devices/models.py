"""The registry: devices, their telemetry, API tokens and bridge heartbeats."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models

from core.errors import PayloadInvalid
from core.ids import DEVICE_ID_PATTERN


class DeviceProfile(models.Model):
    """How a family of devices speaks (docs/profiles.md): a kind (`rules`, or a code-backed one) and its spec."""

    name = models.SlugField(max_length=64, unique=True)
    kind = models.CharField(max_length=32, default="rules")
    builtin = models.BooleanField(default=False, editable=False)
    description = models.TextField(blank=True)
    # The rule language of core/profilespec.py for `rules`; whatever its kind reads for the others.
    spec = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        """Compile the spec as the bridge will: a broken one is refused when saved, not when a device speaks."""
        from devices.services.profiles import profile_check  # noqa: PLC0415 — services import the models

        try:
            profile_check(name=self.name, kind=self.kind, spec=self.spec)
        except PayloadInvalid as exc:
            raise ValidationError({"spec": str(exc)}) from None


class Device(models.Model):
    """A registered device; its id is also its MQTT username."""

    id = models.CharField(primary_key=True, max_length=64, validators=[RegexValidator(DEVICE_ID_PATTERN)])
    name = models.CharField(max_length=200, blank=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    groups = models.ManyToManyField(Group, blank=True, related_name="devices")
    secret_hash = models.CharField(max_length=64, editable=False)
    # The same secret in Mosquitto's password-file form (PBKDF2-SHA512), so the all-in-one's embedded
    # Mosquitto can check it; empty for a device registered before iotgw kept it (rotate its secret).
    mqtt_password_hash = models.CharField(max_length=200, blank=True, editable=False)
    enabled = models.BooleanField(default=True)
    # Seconds without a message before the device is marked offline; empty: IOTGW_OFFLINE_AFTER; 0: never.
    offline_after = models.PositiveIntegerField(
        null=True, blank=True,
        help_text="seconds of silence before the device is marked offline; empty: the gateway's default "
                  "(IOTGW_OFFLINE_AFTER); 0: never")
    online = models.BooleanField(default=False)
    last_seen = models.DateTimeField(null=True, blank=True)
    # The transport it was last seen on (an Inlet's name: mqtt, http, ws, coap); empty until it is first seen.
    # The MQTT bridge delivers commands to a device whose transport is mqtt or empty.
    transport = models.CharField(max_length=16, blank=True, default="", editable=False)
    # {metric: {"value": v, "ts": iso}}: the newest value of every metric, by sample time.
    latest = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Empty: the built-in `iotgw` profile (SPEC §4's own topics), so no device pays a join for it.
    profile = models.ForeignKey(DeviceProfile, to_field="name", null=True, blank=True, on_delete=models.PROTECT,
                                related_name="devices")
    # A child speaks through its gateway (Zigbee2MQTT, a gateway API): its gateway, and its name there.
    gateway = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="children")
    child_name = models.CharField(max_length=200, blank=True)
    # {"reason", "message", "at"} of the last message refused for it, written by a bridge's heartbeat (not per
    # message), so "connected but nothing shows" is diagnosable from its page.
    last_rejection = models.JSONField(null=True, blank=True, editable=False)
    # Until when an answer without a command id (a firmware's new state, docs/profiles.md `answers`) may be for
    # one of its commands: set when a two-way command is leased for delivery (lease end + its timeout). Ingest
    # reads it with the row it locks anyway, so a state message of a device with no command out costs no lookup.
    answer_until = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.id


class DeviceMetric(models.Model):
    """What one metric of a device is: its label, unit and device class (docs/profiles/home-assistant-discovery.md).

    Written by Home Assistant discovery or by hand (the admin); a profile's declared units are not stored
    but read with the profile (devices/selectors.py: device_metrics), and a row here wins over them.
    """

    PROFILE, DISCOVERY, MANUAL = "profile", "discovery", "manual"
    SOURCES = [(s, s) for s in (PROFILE, DISCOVERY, MANUAL)]

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="metrics")
    name = models.CharField(max_length=64)
    label = models.CharField(max_length=200, blank=True)
    unit = models.CharField(max_length=32, blank=True)
    device_class = models.CharField(max_length=64, blank=True)
    source = models.CharField(max_length=16, choices=SOURCES, default=MANUAL)
    # The discovery config it came from (`sensor/<node>/<object>`): an empty retained config removes it.
    discovery_key = models.CharField(max_length=200, blank=True, db_index=True)
    # For a device on a profile generated from discovery: the config itself, which the profile is rebuilt from.
    discovered = models.JSONField(null=True, blank=True, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["device", "name"]
        constraints = [models.UniqueConstraint(fields=["device", "name"], name="device_metric_per_name")]

    def __str__(self) -> str:
        return f"{self.device_id}.{self.name}"


class Telemetry(models.Model):
    """One sample: its time and its metrics; one row per (device, ts), its primary key.

    No surrogate id: on PostgreSQL the table is partitioned by `ts` (devices/partitions.py), and a
    primary key must hold the partition key; an id column and its index were ~35 of ~300 bytes per
    sample (docs/history.md).
    """

    pk = models.CompositePrimaryKey("device_id", "ts")
    # No index of its own: the unique (device, ts) index serves every lookup by device, and two more
    # indexes (Django adds a LIKE one for a text key) were a third of the cost of each insert.
    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="telemetry", db_constraint=False,
                               db_index=False)
    ts = models.DateTimeField()
    data = models.JSONField()
    # When the gateway received it (8 bytes a sample): the benchmark's publish→bridge lag reads it.
    received_at = models.DateTimeField()

    class Meta:
        verbose_name_plural = "telemetry"


class Rollup(models.Model):
    """One numeric metric of one device over one bucket: min, max, sum, count, first and last (docs/history.md).

    Maintained with each batch, from the samples that batch really inserted (a redelivered sample
    changes nothing); merging two rollups of a bucket is associative, so late samples just merge in.
    """

    pk = models.CompositePrimaryKey("device_id", "metric", "bucket")
    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="+", db_constraint=False,
                               db_index=False)
    metric = models.CharField(max_length=64)
    bucket = models.DateTimeField()
    min = models.FloatField()
    max = models.FloatField()
    sum = models.FloatField()
    count = models.BigIntegerField()
    first_ts = models.DateTimeField()
    first = models.FloatField()
    last_ts = models.DateTimeField()
    last = models.FloatField()

    class Meta:
        abstract = True


class RollupMinute(Rollup):
    """Per-minute rollups; partitioned by UTC day of `bucket` on PostgreSQL."""


class RollupHour(Rollup):
    """Per-hour rollups; partitioned by UTC month of `bucket` on PostgreSQL."""


class RollupDirty(models.Model):
    """A device's minute that late samples landed in, for the rollup job's next pass to recompute (PostgreSQL).

    Appended by the batch that stored them, in its insert's statement, without waiting for the job;
    the job recomputes each such minute (and its hour) from the raw rows and removes the rows it read.
    """

    id = models.BigAutoField(primary_key=True)
    device_id = models.CharField(max_length=64)
    bucket = models.DateTimeField()


class RollupWatermark(models.Model):
    """Up to when the rollup job has rolled up the raw samples (PostgreSQL; devices/rollups.py)."""

    name = models.CharField(primary_key=True, max_length=32)
    upto = models.DateTimeField()


class RetentionPolicy(models.Model):
    """Days of history kept for one device or one group, overriding IOTGW_RETENTION_*_DAYS (docs/history.md).

    Empty: the global value; 0: forever. A device's own policy wins; among its groups', the longest.
    """

    device = models.OneToOneField(Device, null=True, blank=True, on_delete=models.CASCADE, related_name="retention")
    group = models.OneToOneField(Group, null=True, blank=True, on_delete=models.CASCADE, related_name="retention")
    raw_days = models.FloatField(null=True, blank=True, validators=[MinValueValidator(0)],
                                 help_text="days raw samples are kept; empty: the global; 0: forever")
    minute_days = models.FloatField(null=True, blank=True, validators=[MinValueValidator(0)],
                                    help_text="days per-minute rollups are kept; empty: the global; 0: forever")
    hour_days = models.FloatField(null=True, blank=True, validators=[MinValueValidator(0)],
                                  help_text="days per-hour rollups are kept; empty: the global; 0: forever")

    class Meta:
        verbose_name_plural = "retention policies"
        constraints = [models.CheckConstraint(
            condition=models.Q(device__isnull=True, group__isnull=False) | models.Q(device__isnull=False,
                                                                                 group__isnull=True),
            name="retention_for_a_device_or_a_group")]

    def __str__(self) -> str:
        return f"retention of {self.device_id or self.group}"


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


class Command(models.Model):
    """A command to a device and its whole lifecycle (SPEC §6); stored before anything is published."""

    QUEUED, SENT, SUCCEEDED, FAILED = "queued", "sent", "succeeded", "failed"
    TIMED_OUT, EXPIRED, CANCELLED = "timed_out", "expired", "cancelled"
    STATUSES = [(s, s) for s in (QUEUED, SENT, SUCCEEDED, FAILED, TIMED_OUT, EXPIRED, CANCELLED)]

    id = models.UUIDField(primary_key=True)
    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="commands")
    issued_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    name = models.CharField(max_length=64)
    params = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=STATUSES, default=QUEUED)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    # The issuing client's reference, echoed in every `command` frame.
    ref = models.JSONField(null=True, blank=True)
    oneway = models.BooleanField(default=False)
    timeout = models.FloatField()
    # Unique per device: a retry by anyone allowed to command that device gets the first command.
    idempotency_key = models.CharField(max_length=128, null=True, blank=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    sent_at = models.DateTimeField(null=True, blank=True)
    # sent_at + timeout: when a two-way command still unanswered becomes timed_out.
    deadline = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # [{"status": s, "at": iso}, ...]: every transition, oldest first.
    history = models.JSONField(default=list, blank=True)
    # Which bridge is publishing it, and until when its claim holds (it renews while the publish is in flight).
    lease_owner = models.CharField(max_length=64, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["device", "idempotency_key"],
                condition=models.Q(idempotency_key__isnull=False),
                name="command_idempotency_key_per_device",
            )
        ]
        indexes = [
            models.Index(fields=["status", "expires_at"], name="command_status_expires"),
            models.Index(fields=["status", "deadline"], name="command_status_deadline"),
            models.Index(fields=["device", "status"], name="command_device_status"),
        ]

    def __str__(self) -> str:
        return f"{self.name} → {self.device_id} ({self.status})"


class WsTicket(models.Model):
    """A short-lived, single-use credential for opening a dashboard WebSocket; only its SHA-256 is stored.

    It remembers the token or session it was fetched with, so revoking that token
    or logging out of that session closes the sockets it opened.
    """

    key_hash = models.CharField(primary_key=True, max_length=64)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    token = models.ForeignKey(ApiToken, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    session_key = models.CharField(max_length=40, blank=True)
    expires_at = models.DateTimeField(db_index=True)
