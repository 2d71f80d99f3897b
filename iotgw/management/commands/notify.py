"""`notify`: the notification sender as its own process (docs/notifications.md); run one or several."""

from __future__ import annotations

import asyncio

from django.core.management import BaseCommand, CommandError

from iotgw.config import notify_options
from notify.selectors import SENDER_FRESH, senders_live
from notify.sender import HOST, Sender


class Command(BaseCommand):
    help = "Send queued notifications (webhooks, e-mail, Apprise) and reminders until stopped."

    def add_arguments(self, parser):
        parser.add_argument("--status", action="store_true",
                            help="exit 0 when a sender on this host beat lately, 1 otherwise (health checks)")

    def handle(self, *args, status: bool = False, **options):
        if status:
            if not senders_live(host=HOST):
                raise CommandError(f"no notification sender on {HOST} beat in the last {SENDER_FRESH:g} s")
            self.stdout.write(f"notification sender on {HOST}: alive")
            return
        sender = Sender(**notify_options())
        self.stdout.write(f"iotgw notification sender {sender.owner} running")
        self.stdout.flush()
        try:
            asyncio.run(sender.run())
        except KeyboardInterrupt:
            pass
