from django.apps import AppConfig


class ApiConfig(AppConfig):
    """The HTTP edge: JSON API, broker hooks, health, metrics, pages, the dashboard's templates and static files."""

    name = "api"
