"""`dropsession CLIENT_ID`: retire a bridge for good by removing its persistent session from the broker."""

from __future__ import annotations

import paho.mqtt.client as mqtt
from django.conf import settings
from django.core.management import BaseCommand, CommandError

from bridge.client import BrokerConfig


class Command(BaseCommand):
    help = (
        "Remove a bridge's persistent MQTT session. Until its session expires, the broker keeps "
        "queueing that bridge's share of the device topics for it; run this when a bridge will not return."
    )

    def add_arguments(self, parser):
        parser.add_argument("client_id")

    def handle(self, *args, client_id: str, **options):
        if not settings.MQTT_URL:
            raise CommandError("Config 'MQTT_URL' is missing, and has no default: which broker holds the session?")
        config = BrokerConfig.from_url(settings.MQTT_URL)
        v5 = config.protocol == 5
        # A clean connect with no session expiry replaces the old session, and ends it on disconnect.
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311, clean_session=None if v5 else True)
        if config.username:
            client.username_pw_set(config.username, config.password)
        if config.tls:
            client.tls_set()
        rc = client.connect(config.host, config.port, **({"clean_start": True} if v5 else {}))
        if rc != mqtt.MQTT_ERR_SUCCESS:
            raise CommandError(f"could not connect to the broker: {mqtt.error_string(rc)}")
        client.loop_start()
        client.disconnect()
        client.loop_stop()
        self.stdout.write(f"session of {client_id} removed")
