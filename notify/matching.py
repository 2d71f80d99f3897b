"""Which subscriptions hear of an event: severity, kinds are checked later; here the device set and who may see it."""

from __future__ import annotations

from django.contrib.auth.models import User

from devices.models import Device
from notify.models import RANK, SEVERITIES, Event, Subscription


def subscriptions_for(event: Event) -> list[Subscription]:
    """Enabled subscriptions on enabled channels whose minimum severity, device set and subscriber admit the event."""
    admitted = SEVERITIES[RANK[event.severity]:]  # this severity and every less severe minimum
    subs = list(Subscription.objects.select_related("user", "channel")
                .filter(enabled=True, channel__enabled=True, min_severity__in=admitted).order_by("pk"))
    if not subs:
        return []
    device = Device.objects.filter(pk=event.device_id).only("pk", "owner_id").first() if event.device_id else None
    device_groups = set(device.groups.values_list("pk", flat=True)) if device else set()
    listed = set(Subscription.devices.through.objects.filter(device_id=event.device_id)
                 .values_list("subscription_id", flat=True)) if device else set()
    user_groups: dict[int, set[int]] = {}
    for user_id, group_id in User.groups.through.objects.filter(
            user_id__in={s.user_id for s in subs if s.user_id}).values_list("user_id", "group_id"):
        user_groups.setdefault(user_id, set()).add(group_id)

    def in_set(sub: Subscription) -> bool:
        if sub.scope == Subscription.DEVICES:
            return sub.pk in listed
        if sub.scope == Subscription.GROUP:
            return device is not None and sub.device_group_id in device_groups
        return True

    def may_see(sub: Subscription) -> bool:
        if sub.group_id is not None:
            return device is None or sub.group_id in device_groups
        user = sub.user
        if user is None or not user.is_active:
            return False
        if user.is_staff or device is None:
            return user.is_staff
        return device.owner_id == user.pk or bool(device_groups & user_groups.get(user.pk, set()))

    return [s for s in subs if in_set(s) and may_see(s)]
