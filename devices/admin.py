"""Django admin for the registry."""

from django.contrib import admin

from devices.models import ApiToken, BridgeHeartbeat, Command, Device, Telemetry


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):
    list_display = ("id", "name", "owner", "enabled", "online", "last_seen")
    list_filter = ("enabled", "online", "groups")
    search_fields = ("id", "name")
    readonly_fields = ("online", "last_seen", "latest", "created_at")
    filter_horizontal = ("groups",)


@admin.register(Telemetry)
class TelemetryAdmin(admin.ModelAdmin):
    list_display = ("device", "ts", "received_at")
    list_filter = ("device",)
    date_hierarchy = "ts"


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("prefix", "user", "name", "created_at", "revoked_at")
    readonly_fields = ("prefix", "created_at")


@admin.register(BridgeHeartbeat)
class BridgeHeartbeatAdmin(admin.ModelAdmin):
    list_display = ("client_id", "beat_at", "connected")


@admin.register(Command)
class CommandAdmin(admin.ModelAdmin):
    """Read-only: a command changes only through its lifecycle services."""

    list_display = ("id", "device", "name", "status", "created_at", "updated_at")
    list_filter = ("status", "name")
    search_fields = ("id", "device__id", "name", "idempotency_key")

    def has_change_permission(self, request, obj=None) -> bool:
        return False
