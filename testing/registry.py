"""Committed users, tokens and devices with unique names, for tests that start processes."""

from __future__ import annotations

import uuid

from testing.waiting import wait_until


class Registry:
    """Creates committed users, tokens and devices with unique names."""

    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex[:6]

    def user(self, name: str = "user", *, staff: bool = False, password: str = "pw-123456"):
        from django.contrib.auth import get_user_model

        user = get_user_model().objects.create_user(f"{name}-{self.tag}", password=password, is_staff=staff)
        return user

    def token(self, user) -> str:
        from devices.services.tokens import token_create

        return token_create(user=user)

    def device(self, name: str = "dev", *, owner=None, groups=()) -> tuple[str, str]:
        from devices.services.devices import device_register

        device, secret = device_register(device_id=f"{name}-{self.tag}", owner=owner, groups=groups)
        return device.id, secret


def demo_secret(device_id: str) -> str:
    """The secret of a device the gateway's simulator (or `demo`) registered, as kept in var/."""
    from sim.fleet import load_secrets

    return load_secrets()[device_id]


def command_status(command_id: str) -> str:
    from devices.models import Command

    return Command.objects.values_list("status", flat=True).get(pk=command_id)


def wait_status(command_id: str, status: str, timeout: float = 15.0) -> None:
    """Wait until the stored command reaches `status`."""
    wait_until(lambda: command_status(command_id) == status, timeout=timeout, what=f"command {command_id} {status}")
