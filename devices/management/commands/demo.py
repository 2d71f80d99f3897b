"""`demo`: an idempotent demo set-up — user, API token and three devices — printed for a newcomer."""

from django.contrib.auth import get_user_model
from django.core.management import BaseCommand

from devices.models import Device
from devices.services import device_register, token_create

DEMO_DEVICES = ("demo-1", "demo-2", "demo-3")


class Command(BaseCommand):
    help = "Create (once) a demo staff user, an API token and three demo devices, and print them."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="demo")
        parser.add_argument("--password", default="demo")

    def handle(self, *args, username: str, password: str, **options):
        User = get_user_model()
        user, created = User.objects.get_or_create(username=username, defaults={"is_staff": True,
                                                                                 "is_superuser": True})
        if created:
            user.set_password(password)
            user.save()
        lines = [f"login:     {username} / {password if created else '(unchanged)'}",
                 f"API token: {token_create(user=user, name='demo')}"]
        for device_id in DEMO_DEVICES:
            if Device.objects.filter(pk=device_id).exists():
                lines.append(f"device:    {device_id} (already registered)")
                continue
            _, secret = device_register(device_id=device_id, name=device_id.replace("-", " ").title(), owner=user)
            lines.append(f"device:    {device_id}  MQTT username {device_id}  secret {secret}")
        self.stdout.write("\n".join(lines))
