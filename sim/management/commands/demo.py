"""`demo`: an idempotent demo set-up — user, API token and three devices — printed for a newcomer."""

from django.contrib.auth import get_user_model
from django.core.management import BaseCommand

from devices.selectors import token_user
from devices.services.tokens import token_create, token_revoke
from sim.fleet import SECRETS_FILE, ensure_devices, kept_get, kept_put

DEMO_DEVICES = ("demo-1", "demo-2", "demo-3")
DEMO_TOKEN_NAME = "demo"
TOKEN_FILE = SECRETS_FILE.with_name("demo-token.json")


def demo_token(user) -> str:
    """The demo user's API token: the one kept in var/ while it still works, else a new one replacing the old.

    So each `make run` prints the same token instead of adding another one that never expires.
    """
    kept = kept_get(TOKEN_FILE)
    if isinstance(kept, str) and getattr(token_user(kept), "pk", None) == user.pk:
        return kept
    token_revoke(user=user, name=DEMO_TOKEN_NAME)
    key = token_create(user=user, name=DEMO_TOKEN_NAME)
    kept_put(TOKEN_FILE, key)
    return key


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
        # Shown while it still is the password: a first run that stopped early (a port taken) printed it too.
        shown = password if created or user.check_password(password) else "(changed since)"
        lines = [f"login:     {username} / {shown}",
                 f"API token: {demo_token(user)}"]
        names = {d: d.replace("-", " ").title() for d in DEMO_DEVICES}
        secrets = ensure_devices(list(DEMO_DEVICES), owner=user, names=names)
        for device_id in DEMO_DEVICES:
            secret = secrets[device_id] or "(disabled)"
            lines.append(f"device:    {device_id}  MQTT username {device_id}  secret {secret}")
        self.stdout.write("\n".join(lines))
