"""/metrics over real Daphne: refused without the configured scrape token; command counts follow commands."""

from __future__ import annotations

import pytest

from testing.http import call, http_get
from testing.waiting import wait_until
from tests.integration.test_api import metric

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

TOKEN = "scrape-" + "t" * 24


def test_metrics_need_the_token_and_count_commands_as_they_move(stack, registry):
    user = registry.user("owner")
    token = registry.token(user)
    device_id, _ = registry.device("d", owner=user)
    stack.env.update(IOTGW_METRICS_TOKEN=TOKEN, IOTGW_METRICS_COUNT_SECONDS="0.5")
    stack.start_web()

    status, body = http_get(stack.web + "/metrics")
    assert status == 401 and b"iotgw_" not in body
    assert http_get(stack.web + "/metrics", {"Authorization": "Bearer wrong"})[0] == 401
    scrape = {"Authorization": f"Bearer {TOKEN}"}
    assert http_get(stack.web + "/healthz")[0] == 200  # probes stay open

    issued = [call("POST", stack.web + f"/api/devices/{device_id}/commands", body={"name": "reboot"}, token=token)
              for _ in range(3)]
    assert all(r.status == 202 for r in issued)
    counts = lambda: {s: metric(stack.web, "iotgw_commands", headers=scrape, status=s)  # noqa: E731
                      for s in ("queued", "cancelled")}
    wait_until(lambda: counts() == {"queued": 3, "cancelled": 0}, what="three queued commands counted")
    cancelled = call("POST", stack.web + f"/api/commands/{issued[0].json()['id']}/cancel", token=token)
    assert cancelled.status == 200
    wait_until(lambda: counts() == {"queued": 2, "cancelled": 1}, what="the cancel counted")
