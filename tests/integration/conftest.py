"""Fixtures the integration tests share."""

from __future__ import annotations

import pytest

from testing.firmware import Firmware


@pytest.fixture
def firmwares():
    """Firmware clients a test starts (append them); closed after it."""
    started: list[Firmware] = []
    yield started
    for firmware in started:
        firmware.close()
