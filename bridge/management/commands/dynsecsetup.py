"""`dynsecsetup`: give the bridge its account on a Mosquitto with dynamic security (docs/broker-auth.md)."""

from django.conf import settings
from django.core.management import BaseCommand, CommandError

from bridge.dynsec import BRIDGE_ROLE, DynsecError, bridge_account_ensure


class Command(BaseCommand):
    help = ("Create or reset the bridge's broker account (MQTT_BRIDGE_USERNAME / MQTT_BRIDGE_PASSWORD, by default "
            "MQTT_URL's) with the rights it needs, using the admin account of MQTT_DYNSEC_URL. Idempotent.")

    def handle(self, *args, **options):
        username, password = settings.MQTT_BRIDGE_USERNAME, settings.MQTT_BRIDGE_PASSWORD
        if not username or not password:
            raise CommandError("Config 'MQTT_URL' (or MQTT_BRIDGE_USERNAME and MQTT_BRIDGE_PASSWORD) needs the "
                               "bridge's username and password: mqtt://bridge:secret@broker:1883")
        if username == env_admin():
            raise CommandError("the bridge's account is the dynamic-security admin's: give the bridge its own")
        try:
            bridge_account_ensure(username=username, password=password)
        except DynsecError as exc:
            raise CommandError(f"dynamic security: {exc}") from None
        self.stdout.write(f"bridge account {username!r} ready on the broker (role {BRIDGE_ROLE})")


def env_admin() -> str | None:
    """The admin username of MQTT_DYNSEC_URL."""
    from core.broker import BrokerConfig

    return BrokerConfig.from_url(settings.MQTT_DYNSEC_URL).username if settings.MQTT_DYNSEC_URL else None
