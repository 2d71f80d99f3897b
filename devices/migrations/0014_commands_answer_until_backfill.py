"""Devices with a two-way command out when this runs keep taking id-less answers for it (`Device.answer_until`)."""

from datetime import timedelta

from django.db import migrations
from django.db.models import Q
from django.utils import timezone


def backfill(apps, schema_editor):
    Command = apps.get_model("devices", "Command")
    Device = apps.get_model("devices", "Device")
    waiting = Q(status="sent") | Q(status="queued", lease_until__isnull=False)
    ids = set(Command.objects.filter(waiting, oneway=False).values_list("device_id", flat=True))
    # Two days cover any lease plus the longest timeout the API accepts (one day); past it, the horizon is reset by the next claim.
    Device.objects.filter(pk__in=ids).update(answer_until=timezone.now() + timedelta(days=2))


class Migration(migrations.Migration):

    dependencies = [("devices", "0013_commands_answer_until")]

    operations = [migrations.RunPython(backfill, migrations.RunPython.noop)]
