from django.apps import AppConfig


class SimConfig(AppConfig):
    """The simulator: `simulate` and `demo`; devices that talk to the gateway over MQTT like any other."""

    name = "sim"
