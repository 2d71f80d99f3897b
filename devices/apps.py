from django.apps import AppConfig
from django.db.models.signals import post_migrate, pre_migrate


class DevicesConfig(AppConfig):
    """The domain: the registry, telemetry, commands, and the ingest pipeline every transport shares."""

    name = "devices"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Grafana's views are made again around every migrate, so none ever blocks a migration (devices/grafana.py).
        from devices import grafana

        # Logging out ends the dashboard sockets of that session (a receiver of Django's user_logged_out).
        from devices.services import tokens  # noqa: F401

        pre_migrate.connect(grafana.on_pre_migrate, sender=self)
        post_migrate.connect(grafana.on_post_migrate, sender=self)
