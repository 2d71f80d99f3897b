"""Django admin for notifications: channels (with a test-send action), subscriptions, the delivery log."""

from django import forms
from django.conf import settings
from django.contrib import admin, messages

from notify.models import Attempt, Channel, Delivery, Subscription
from notify.registry import target_refusal
from notify.services import channel_test_send
from notify.signing import new_secret


class ChannelForm(forms.ModelForm):
    class Meta:
        model = Channel
        fields = "__all__"

    def clean(self):
        data = super().clean() or {}
        if data.get("kind") and data.get("target"):
            why = target_refusal(data["kind"], data["target"], allowed_hosts=settings.IOTGW_NOTIFY_HOSTS)
            if why:
                self.add_error("target", why)
        return data


@admin.register(Channel)
class ChannelAdmin(admin.ModelAdmin):
    form = ChannelForm
    list_display = ("name", "kind", "enabled", "created_at")
    list_filter = ("kind", "enabled")
    search_fields = ("name",)
    actions = ["send_test"]

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        form.base_fields["secret"].help_text = ("webhook only: the HMAC-SHA256 key of X-Iotgw-Signature; "
                                                "left empty, one is made")
        return form

    def save_model(self, request, obj: Channel, form, change: bool) -> None:
        if obj.kind == Channel.WEBHOOK and not obj.secret:
            obj.secret = new_secret()
        super().save_model(request, obj, form, change)

    @admin.action(description="Send a test notification (through the real channel, now)")
    def send_test(self, request, queryset):
        for channel in queryset:
            _delivery, outcome = channel_test_send(channel=channel, timeout=settings.IOTGW_NOTIFY_TIMEOUT,
                                                   from_email=settings.DEFAULT_FROM_EMAIL or "",
                                                   allowed_hosts=settings.IOTGW_NOTIFY_HOSTS)
            code = f" (HTTP {outcome.status_code})" if outcome.status_code else ""
            if outcome.ok:
                self.message_user(request, f"{channel.name}: sent{code} in {outcome.latency_ms:.0f} ms",
                                  messages.SUCCESS)
            else:
                self.message_user(request, f"{channel.name}: failed{code}: {outcome.error[:300]}", messages.ERROR)


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    list_display = ("__str__", "min_severity", "scope", "repeat_every", "quiet_period", "enabled")
    list_filter = ("enabled", "min_severity", "scope", "channel")
    filter_horizontal = ("devices",)
    autocomplete_fields = ("channel",)


class AttemptInline(admin.TabularInline):
    model = Attempt
    extra = 0
    can_delete = False
    readonly_fields = ("at", "ok", "status_code", "error", "latency_ms")

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    """The delivery log: read-only, each delivery with its tries."""

    list_display = ("created_at", "channel", "key", "kind", "status", "attempts", "status_code", "error")
    list_filter = ("status", "channel", "event__kind")
    search_fields = ("key", "id")
    list_select_related = ("channel", "event")
    readonly_fields = [f.name for f in Delivery._meta.fields]
    inlines = [AttemptInline]

    @admin.display(description="kind")
    def kind(self, obj: Delivery) -> str:
        return obj.event.kind

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
