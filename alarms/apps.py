from django.apps import AppConfig


class AlarmsConfig(AppConfig):
    """Alarm rules, alarms and their transitions (docs/alarms.md)."""

    name = "alarms"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from alarms import receivers  # noqa: F401  (rule changes bump the version every bridge polls)
