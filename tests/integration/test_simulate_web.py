"""`simulate --transport ws|http` against a real Daphne: its devices' samples are stored over that transport."""

from __future__ import annotations

import io
import uuid

import pytest
from django.core.management import call_command

from devices.models import Device, Telemetry

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize("transport", ["ws", "http"])
def test_simulated_devices_send_over_the_chosen_transport(stack, transport):
    stack.start_web()
    prefix = f"sim{transport}-{uuid.uuid4().hex[:6]}"
    out = io.StringIO()
    call_command("simulate", "--transport", transport, "--devices", "2", "--rate", "10", "--duration", "4",
                 "--web-url", stack.web, "--prefix", prefix, stdout=out)
    assert "done:" in out.getvalue()
    ids = [f"{prefix}-1", f"{prefix}-2"]
    assert Telemetry.objects.filter(device_id__in=ids).count() >= 10, out.getvalue()
    assert set(Device.objects.filter(pk__in=ids).values_list("transport", flat=True)) == {transport}
