"""`adddevice ID [--name N] [--owner USER] [--group G]`: register a device, print its credentials once."""

from django.contrib.auth import get_user_model
from django.core.management import BaseCommand, CommandError

from core.errors import GatewayError
from devices.services.devices import device_register


class Command(BaseCommand):
    help = "Register a device and print its MQTT username and secret (shown only once)."

    def add_arguments(self, parser):
        parser.add_argument("device_id")
        parser.add_argument("--name", default="")
        parser.add_argument("--owner", help="username of the owner")
        parser.add_argument("--group", action="append", default=[], help="a group to share it with (repeatable)")
        parser.add_argument("--offline-after", type=int, default=None, metavar="SECONDS",
                            help="silence before it is marked offline (default IOTGW_OFFLINE_AFTER; 0: never)")

    def handle(self, *args, device_id, name, owner, group, offline_after, **options):
        user = None
        if owner:
            try:
                user = get_user_model().objects.get(username=owner)
            except get_user_model().DoesNotExist:
                raise CommandError(f"no user named {owner!r}") from None
        try:
            device, secret = device_register(device_id=device_id, name=name, owner=user, groups=group,
                                             offline_after=offline_after)
        except GatewayError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"device:   {device.id}\nusername: {device.id}\nsecret:   {secret}\n")
