from django.apps import AppConfig


class DevicesConfig(AppConfig):
    """The domain: the registry, telemetry, commands, and the ingest pipeline every transport shares."""

    name = "devices"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Logging out ends the dashboard sockets of that session (a receiver of Django's user_logged_out).
        from devices.services import tokens  # noqa: F401
