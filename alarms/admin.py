"""Django admin for alarm rules (validated on save) and alarms with their transitions (read-only history)."""

from django.contrib import admin, messages
from django.db import transaction

from alarms.models import Alarm, AlarmEvent, AlarmRule
from alarms.services import alarm_acknowledge, alarm_clear
from core.errors import GatewayError


@admin.register(AlarmRule)
class AlarmRuleAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "severity", "enabled", "device", "group", "metric", "low", "high", "duration")
    list_filter = ("kind", "severity", "enabled")
    search_fields = ("name", "metric", "device__id")
    raw_id_fields = ("device",)
    fieldsets = [
        (None, {"fields": ("name", "enabled", "kind", "severity")}),
        ("Watches", {"fields": ("device", "group"), "description": "one device, one group, or neither: every device"}),
        ("Condition", {"fields": ("metric", "low", "high", "low_clear", "high_clear", "duration", "command")}),
    ]


class AlarmEventInline(admin.TabularInline):
    model = AlarmEvent
    extra = 0
    can_delete = False
    readonly_fields = ("kind", "at", "by", "note", "value")

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Alarm)
class AlarmAdmin(admin.ModelAdmin):
    list_display = ("id", "rule_name", "device", "severity", "state", "value", "first_seen", "last_seen", "retriggers")
    list_filter = ("state", "severity", "kind")
    search_fields = ("rule_name", "device__id")
    inlines = [AlarmEventInline]
    actions = ["acknowledge", "clear"]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in Alarm._meta.fields]  # transitions go through the services, with their events

    def has_add_permission(self, request):
        return False

    def _each(self, request, queryset, service, done: str) -> None:
        count = 0
        for alarm in queryset:
            try:
                with transaction.atomic():
                    service(user=request.user, alarm_id=alarm.pk, note="from the admin")
                count += 1
            except GatewayError as exc:
                self.message_user(request, f"alarm {alarm.pk}: {exc}", messages.WARNING)
        self.message_user(request, f"{count} alarm(s) {done}")

    @admin.action(description="Acknowledge")
    def acknowledge(self, request, queryset):
        self._each(request, queryset, alarm_acknowledge, "acknowledged")

    @admin.action(description="Clear")
    def clear(self, request, queryset):
        self._each(request, queryset, alarm_clear, "cleared")
