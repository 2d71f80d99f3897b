"""Rule changes bump the version every bridge polls; a rule that goes clears its open alarms first.

Receivers of Django's model signals, so the admin, the API and the shell alike are covered.
`QuerySet.update()` on rules sends no signal: call `services.rule_bump()` after one.
"""

from __future__ import annotations

from typing import Any

from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete
from django.dispatch import receiver

from alarms.models import AlarmRule
from alarms.services import alarms_clear_of_rule, rule_bump
from devices.models import Device


@receiver(post_save, sender=AlarmRule)
@receiver(post_delete, sender=AlarmRule)
def _rules_changed(sender: Any, **kwargs: Any) -> None:
    rule_bump()


@receiver(pre_delete, sender=AlarmRule)
def _rule_going(sender: Any, instance: AlarmRule, **kwargs: Any) -> None:
    alarms_clear_of_rule(rule_id=instance.pk, note="its rule was deleted")


@receiver(m2m_changed, sender=Device.groups.through)
def _membership_changed(sender: Any, action: str, **kwargs: Any) -> None:
    """A group rule's devices are resolved when the rules load: a device joining or leaving a group reloads."""
    if action in ("post_add", "post_remove", "post_clear"):
        rule_bump()
