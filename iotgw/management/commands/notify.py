"""`notify`: the notification sender as its own process (docs/notifications.md); run one or several."""

from __future__ import annotations

import asyncio

from django.core.management import BaseCommand

from iotgw.config import notify_options
from notify.sender import Sender


class Command(BaseCommand):
    help = "Send queued notifications (webhooks, e-mail, Apprise) and reminders until stopped."

    def handle(self, *args, **options):
        sender = Sender(**notify_options())
        self.stdout.write(f"iotgw notification sender {sender.owner} running")
        self.stdout.flush()
        try:
            asyncio.run(sender.run())
        except KeyboardInterrupt:
            pass
