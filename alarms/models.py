"""Alarm rules, alarms, every transition of an alarm, and the rules' version counter."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from alarms import rules
from core.errors import PayloadInvalid
from devices.models import Device

SEVERITY_CHOICES = [(s, s) for s in rules.SEVERITIES]


class AlarmRule(models.Model):
    """When an alarm is raised: a metric past a threshold, silence, offline, a failed command (docs/alarms.md).

    Attached to one device, to a group of devices (auth groups, as `Device.groups`), or, with
    neither, to every device. Validated on every save (`rules.rule_spec`); no user code.
    """

    KIND_CHOICES = [(k, k) for k in rules.KINDS]

    name = models.CharField(max_length=rules.MAX_NAME)
    enabled = models.BooleanField(default=True)
    kind = models.CharField(max_length=16, choices=KIND_CHOICES)
    severity = models.CharField(max_length=16, choices=SEVERITY_CHOICES, default="major")
    device = models.ForeignKey(Device, null=True, blank=True, on_delete=models.CASCADE, related_name="alarm_rules",
                               help_text="the one device it watches; empty: the group's, or every device")
    group = models.ForeignKey(Group, null=True, blank=True, on_delete=models.CASCADE, related_name="alarm_rules",
                              help_text="the devices of this group; empty: the device, or every device")
    metric = models.CharField(max_length=64, blank=True, help_text="above, below, outside: the metric watched")
    low = models.FloatField(null=True, blank=True, help_text="below, outside: raises under this value")
    high = models.FloatField(null=True, blank=True, help_text="above, outside: raises over this value")
    low_clear = models.FloatField(null=True, blank=True, help_text="clears at or over this (≥ low; empty: low)")
    high_clear = models.FloatField(null=True, blank=True, help_text="clears at or under this (≤ high; empty: high)")
    duration = models.FloatField(default=0.0, help_text="seconds the condition must hold before it raises "
                                 "(threshold: for; inactivity: the silence; offline: offline for)")
    command = models.CharField(max_length=rules.MAX_COMMAND, blank=True,
                               help_text="command_failed: only this command's failures; empty: any command")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=Q(device__isnull=True) | Q(group__isnull=True),
                                   name="alarm_rule_device_or_group"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind}, {self.severity})"

    def spec(self) -> rules.RuleSpec:
        """The rule's fields, checked (PayloadInvalid names the bad one)."""
        return rules.rule_spec(kind=self.kind, severity=self.severity, metric=self.metric, low=self.low,
                               high=self.high, low_clear=self.low_clear, high_clear=self.high_clear,
                               duration=self.duration, command=self.command)

    def clean(self) -> None:
        if self.device_id is not None and self.group_id is not None:
            raise ValidationError("a rule watches one device or one group, not both")
        try:
            self.spec()
        except PayloadInvalid as exc:
            raise ValidationError(str(exc)) from None

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.clean()  # on every save, not only in forms: the engine trusts stored rules
        super().save(*args, **kwargs)


class Alarm(models.Model):
    """One occurrence of a rule's condition on one device: active → acknowledged → cleared."""

    ACTIVE, ACKNOWLEDGED, CLEARED = "active", "acknowledged", "cleared"
    STATES = [(s, s) for s in (ACTIVE, ACKNOWLEDGED, CLEARED)]

    rule = models.ForeignKey(AlarmRule, null=True, on_delete=models.SET_NULL, related_name="alarms")
    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="alarms")
    # Copied from the rule when raised: the history stays readable after the rule changes or goes.
    rule_name = models.CharField(max_length=rules.MAX_NAME)
    kind = models.CharField(max_length=16)
    severity = models.CharField(max_length=16, choices=SEVERITY_CHOICES)
    state = models.CharField(max_length=16, choices=STATES, default=ACTIVE)
    value = models.FloatField(null=True, blank=True, help_text="the value that raised it")
    message = models.CharField(max_length=300, blank=True)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    retriggers = models.PositiveIntegerField(default=0)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                        related_name="+")
    ack_note = models.TextField(blank=True)
    cleared_at = models.DateTimeField(null=True, blank=True)
    cleared_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")

    class Meta:
        ordering = ["-id"]
        constraints = [
            # At most one open alarm per (rule, device), whichever bridge or web process raises it.
            models.UniqueConstraint(fields=["rule", "device"], condition=~Q(state="cleared"),
                                    name="alarm_one_open_per_rule_device"),
        ]
        indexes = [
            models.Index(fields=["state", "severity"], name="alarm_state_severity"),
            models.Index(fields=["device", "state"], name="alarm_device_state"),
        ]

    def __str__(self) -> str:
        return f"{self.rule_name} on {self.device_id} ({self.state})"


class AlarmEvent(models.Model):
    """One transition of an alarm, stored in the transaction that made it."""

    RAISED, ACKNOWLEDGED, CLEARED, RETRIGGERED = "raised", "acknowledged", "cleared", "retriggered"
    KINDS = [(k, k) for k in (RAISED, ACKNOWLEDGED, CLEARED, RETRIGGERED)]

    id = models.BigAutoField(primary_key=True)
    alarm = models.ForeignKey(Alarm, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=16, choices=KINDS)
    at = models.DateTimeField()
    by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                           related_name="+")
    note = models.TextField(blank=True)
    value = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.alarm_id} {self.kind} at {self.at}"


class AlarmRuleVersion(models.Model):
    """One row, bumped in the transaction of every rule change; each bridge polls it to reload its rules."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    version = models.BigIntegerField(default=0)
