"""`revoketoken PREFIX | --user USERNAME`: revoke API tokens and close the WebSockets opened with them."""

from django.contrib.auth import get_user_model
from django.core.management import BaseCommand, CommandError

from devices.services.tokens import token_revoke


class Command(BaseCommand):
    help = "Revoke an API token (by its key or its 12-character prefix), or every token of a user."

    def add_arguments(self, parser):
        parser.add_argument("token", nargs="?", help="the token, or its prefix as shown in the admin")
        parser.add_argument("--user", help="revoke every token of this user instead")

    def handle(self, *args, token, user, **options):
        if bool(token) == bool(user):
            raise CommandError("give a token (or its prefix), or --user USERNAME")
        if user:
            owner = get_user_model().objects.filter(username=user).first()
            if owner is None:
                raise CommandError(f"no user named {user!r}")
            count = token_revoke(user=owner)
        elif len(token) > 12:
            count = token_revoke(key=token)
        else:
            count = token_revoke(prefix=token)
        if not count:
            raise CommandError("no such unrevoked token")
        self.stdout.write(f"revoked {count} token(s); their open WebSockets are being closed")
