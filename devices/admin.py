"""Django admin for the registry; secrets and tokens are issued by the services and shown once."""

from django.contrib import admin, messages
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse

from core.errors import GatewayError
from devices.models import ApiToken, BridgeHeartbeat, Command, Device, DeviceMetric, RetentionPolicy
from devices.secrets import secret_hash
from devices.services.devices import device_register, device_rotate_secret, device_set_enabled
from devices.services.tokens import token_create

SHOWN_ONCE = "admin/devices/shown_once.html"


def _shown_once(request: HttpRequest, model_admin: admin.ModelAdmin, *, title: str, what: str, headers: list[str],
                rows: list[tuple[str, str, str]]) -> HttpResponse:
    """A page with new credentials, answered directly: they never sit in a message cookie or the session."""
    opts = model_admin.model._meta
    context = {**model_admin.admin_site.each_context(request), "title": title, "opts": opts, "what": what,
               "it_is": "they are" if len(rows) > 1 or what.endswith("s") else "it is", "headers": headers,
               "rows": rows, "back": reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")}
    response = TemplateResponse(request, SHOWN_ONCE, context)
    response["Cache-Control"] = "no-store"
    return response


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):
    list_display = ("id", "name", "owner", "enabled", "online", "last_seen")
    list_filter = ("enabled", "online", "groups")
    search_fields = ("id", "name")
    readonly_fields = ("online", "last_seen", "latest", "created_at")
    filter_horizontal = ("groups",)
    actions = ["issue_new_secrets"]

    def get_readonly_fields(self, request, obj=None):
        # The id is the MQTT username: fixed once registered.
        return ("id", *self.readonly_fields) if obj is not None else self.readonly_fields

    def save_model(self, request, obj: Device, form, change: bool) -> None:
        """Registering goes through the service (secret, broker account); so does enabling or disabling."""
        if not change:
            device, obj._new_secret = device_register(device_id=obj.id, name=obj.name, owner=obj.owner,  # type: ignore[attr-defined]
                                                      offline_after=obj.offline_after)
            obj.created_at, obj.secret_hash = device.created_at, device.secret_hash
            obj._state.adding = False
            return
        enabled = obj.enabled
        super().save_model(request, obj, form, change)
        if "enabled" in form.changed_data:
            device_set_enabled(device_id=obj.id, enabled=enabled)

    def response_add(self, request, obj: Device, post_url_continue=None) -> HttpResponse:
        return _shown_once(request, self, title=f"Device {obj.id} registered", what="its secret",
                           headers=["device", "MQTT username", "secret"], rows=[(obj.id, obj.id, obj._new_secret)])  # type: ignore[attr-defined]

    @admin.action(description="Issue a new secret (the old one stops working)")
    def issue_new_secrets(self, request, queryset) -> HttpResponse | None:
        rows = []
        try:
            with transaction.atomic():
                for device in queryset.order_by("pk"):
                    rows.append((device.id, device.id, device_rotate_secret(device_id=device.id)))
        except GatewayError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return None
        return _shown_once(request, self, title="New device secrets", what="the new secrets",
                           headers=["device", "MQTT username", "secret"], rows=rows)


@admin.register(DeviceMetric)
class DeviceMetricAdmin(admin.ModelAdmin):
    """Labels and units; one saved here is `manual`, and discovery leaves it as it is."""

    list_display = ("device", "name", "label", "unit", "source")
    list_filter = ("source",)
    search_fields = ("device__id", "name", "label")
    raw_id_fields = ("device",)
    readonly_fields = ("source", "discovery_key", "updated_at")

    def save_model(self, request, obj, form, change):
        obj.source = DeviceMetric.MANUAL
        super().save_model(request, obj, form, change)


@admin.register(RetentionPolicy)
class RetentionPolicyAdmin(admin.ModelAdmin):
    """History kept for one device or group instead of IOTGW_RETENTION_*_DAYS (docs/history.md)."""

    list_display = ("__str__", "raw_days", "minute_days", "hour_days")
    autocomplete_fields = ("device",)


# Telemetry has no admin page: Django's admin refuses a composite primary key (its (device, ts)); the
# device page and the API show history.


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("prefix", "user", "name", "created_at", "revoked_at")
    readonly_fields = ("prefix", "created_at")

    def get_fields(self, request, obj=None):
        return ("user", "name") if obj is None else ("user", "name", "prefix", "created_at", "revoked_at")

    def save_model(self, request, obj: ApiToken, form, change: bool) -> None:
        """A new token is made by the service (only its hash is stored); its key is shown once."""
        if change:
            return super().save_model(request, obj, form, change)
        obj._new_key = token_create(user=obj.user, name=obj.name)  # type: ignore[attr-defined]
        created = ApiToken.objects.get(key_hash=secret_hash(obj._new_key))  # type: ignore[attr-defined]
        obj.pk, obj.prefix, obj.created_at = created.pk, created.prefix, created.created_at
        obj._state.adding = False
        return None

    def response_add(self, request, obj: ApiToken, post_url_continue=None) -> HttpResponse:
        return _shown_once(request, self, title=f"API token for {obj.user}", what="the token",
                           headers=["user", "name", "token"], rows=[(str(obj.user), obj.name, obj._new_key)])  # type: ignore[attr-defined]


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
