"""`rotatesecret ID`: give a device a new secret and print it once; the old one stops working at once."""

from django.core.management import BaseCommand, CommandError

from core.errors import GatewayError
from devices.services.devices import device_rotate_secret


class Command(BaseCommand):
    help = ("Issue a new secret for a device and print it (shown only once). The old secret stops working, "
            "and connections made with it are dropped by a broker that follows the registry.")

    def add_arguments(self, parser):
        parser.add_argument("device_id")

    def handle(self, *args, device_id, **options):
        try:
            secret = device_rotate_secret(device_id=device_id)
        except GatewayError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"device:   {device_id}\nusername: {device_id}\nsecret:   {secret}\n")
