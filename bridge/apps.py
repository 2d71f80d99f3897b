from django.apps import AppConfig


class BridgeConfig(AppConfig):
    """The MQTT edge: its own client, the bridge process, dynamic security, the embedded brokers."""

    name = "bridge"

    def ready(self) -> None:
        # Registry changes reach Mosquitto's dynamic security (when MQTT_DYNSEC is on) through the domain's signals.
        from bridge import dynsec

        dynsec.connect_receivers()
