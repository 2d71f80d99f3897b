"""Notifications: channels, subscriptions, the outbox (events and their deliveries), the delivery log."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models

from devices.models import Device

# Most severe first; a subscription's minimum admits its own rank and every one before it.
SEVERITIES = ("critical", "major", "minor", "warning", "info")
RANK = {name: rank for rank, name in enumerate(SEVERITIES)}
# What the alarm service says happened, plus what the sender itself makes: reminders and test sends.
ALARM_KINDS = ("raised", "acknowledged", "cleared", "retriggered")
KINDS = (*ALARM_KINDS, "reminder", "test")


class Channel(models.Model):
    """Where notifications go: a webhook URL, e-mail addresses, or an Apprise URL (Slack, Telegram, ntfy…)."""

    WEBHOOK, EMAIL, APPRISE = "webhook", "email", "apprise"
    KINDS = [(k, k) for k in (WEBHOOK, EMAIL, APPRISE)]

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=16, choices=KINDS)
    # The webhook's URL, comma-separated e-mail addresses, or an Apprise URL (which holds its service's token).
    target = models.TextField(help_text="webhook URL, comma-separated e-mail addresses, or an Apprise URL")
    # The webhook's HMAC-SHA256 key; kept in clear because signing needs it, never shown by the API after creation.
    secret = models.CharField(max_length=128, blank=True)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"


_ONE_SUBSCRIBER = models.Q(user__isnull=False, group__isnull=True) | models.Q(user__isnull=True, group__isnull=False)


class Subscription(models.Model):
    """Who is told about what, through which channel: a user's or a group's, by severity and device set."""

    ALL, DEVICES, GROUP = "all", "devices", "group"
    SCOPES = [(s, s) for s in (ALL, DEVICES, GROUP)]

    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="subscriptions")
    # The subscriber: it hears only of devices it may see (a user: owned, shared by group, or all for staff;
    # a group: the group's devices).
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
                             related_name="notify_subscriptions")
    group = models.ForeignKey(Group, null=True, blank=True, on_delete=models.CASCADE,
                              related_name="notify_subscriptions")
    min_severity = models.CharField(max_length=16, choices=[(s, s) for s in SEVERITIES], default="warning")
    scope = models.CharField(max_length=16, choices=SCOPES, default=ALL)
    devices = models.ManyToManyField(Device, blank=True, related_name="+")
    device_group = models.ForeignKey(Group, null=True, blank=True, on_delete=models.CASCADE, related_name="+",
                                     help_text="with scope `group`: the devices of this group")
    kinds = models.JSONField(default=list, blank=True, help_text="event kinds to send; empty: all")
    # Seconds between reminders while an alarm stays active (raised, not acknowledged or cleared); empty: none.
    repeat_every = models.PositiveIntegerField(null=True, blank=True)
    # Seconds after a clear during which a new raise of the same alarm is held back (against flapping).
    quiet_period = models.PositiveIntegerField(default=0)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.CheckConstraint(condition=_ONE_SUBSCRIBER, name="notify_subscription_user_or_group")]

    def __str__(self) -> str:
        return f"{self.user or self.group} → {self.channel.name}"


class Event(models.Model):
    """One thing to tell, as it was when it happened: what its deliveries send, whatever changes later."""

    key = models.CharField(max_length=200, help_text='the alarm\'s stable identity, e.g. "alarm:42"')
    kind = models.CharField(max_length=16, choices=[(k, k) for k in KINDS])
    severity = models.CharField(max_length=16, choices=[(s, s) for s in SEVERITIES])
    device_id = models.CharField(max_length=64, blank=True)
    title = models.CharField(max_length=300)
    body = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True)
    at = models.DateTimeField()

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["key"], name="notify_event_key")]

    def __str__(self) -> str:
        return f"{self.kind} {self.key}"


class Delivery(models.Model):
    """The outbox row: one event to one channel, retried until `sent` or `failed`."""

    PENDING, SENT, FAILED = "pending", "sent", "failed"
    STATUSES = [(s, s) for s in (PENDING, SENT, FAILED)]

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)  # the X-Iotgw-Delivery header
    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="deliveries")
    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="deliveries")
    key = models.CharField(max_length=200)  # the event's, so a key's deliveries go out in order per channel
    status = models.CharField(max_length=16, choices=STATUSES, default=PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    lease_owner = models.CharField(max_length=64, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    status_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "event_id"]
        verbose_name_plural = "deliveries"
        constraints = [models.UniqueConstraint(fields=["event", "channel"], name="notify_delivery_once_per_channel")]
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="notify_delivery_due"),
            models.Index(fields=["channel", "key", "status"], name="notify_delivery_channel_key"),
        ]

    def __str__(self) -> str:
        return f"{self.event} → {self.channel.name} ({self.status})"


class Attempt(models.Model):
    """One try of a delivery: the delivery log of its channel."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="log")
    at = models.DateTimeField()
    ok = models.BooleanField()
    status_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    latency_ms = models.FloatField()

    class Meta:
        ordering = ["id"]


class KeyState(models.Model):
    """What one subscription was told about one alarm key: for reminders and the quiet period."""

    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=200)
    open = models.BooleanField(default=False)
    told_open = models.BooleanField(default=False)  # the subscriber heard of the current raise
    acknowledged = models.BooleanField(default=False)
    cleared_at = models.DateTimeField(null=True, blank=True)
    raised_by = models.ForeignKey(Event, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    reminders = models.PositiveIntegerField(default=0)
    # When the sweep acts: a held-back raise goes out, or the next reminder is due.
    due_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["subscription", "key"], name="notify_keystate_once")]
        indexes = [models.Index(fields=["due_at"], name="notify_keystate_due")]


class Counter(models.Model):
    """Notifications sent, failed and retried per channel kind, counted as deliveries finish (for /metrics)."""

    kind = models.CharField(primary_key=True, max_length=16)
    sent = models.BigIntegerField(default=0)
    failed = models.BigIntegerField(default=0)
    retried = models.BigIntegerField(default=0)


class SenderHeartbeat(models.Model):
    """A running sender's pulse, for its health check and /metrics."""

    owner = models.CharField(primary_key=True, max_length=64)
    host = models.CharField(max_length=64)
    beat_at = models.DateTimeField()
