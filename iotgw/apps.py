from django.apps import AppConfig


class IotgwConfig(AppConfig):
    """The composition root: its `gateway` and `runworker` commands build the processes from settings."""

    name = "iotgw"
