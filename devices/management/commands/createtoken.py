"""`createtoken USERNAME`: print a new API token for a user."""

from django.contrib.auth import get_user_model
from django.core.management import BaseCommand, CommandError

from devices.services.tokens import token_create


class Command(BaseCommand):
    help = "Create an API token for a user and print it (shown only once)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="cli", help="a label for the token")

    def handle(self, *args, username, name, **options):
        try:
            user = get_user_model().objects.get(username=username)
        except get_user_model().DoesNotExist:
            raise CommandError(f"no user named {username!r}") from None
        self.stdout.write(token_create(user=user, name=name))
