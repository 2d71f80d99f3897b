"""/metrics in-process: the optional scrape token, and command counts that cost one query per interval."""

from __future__ import annotations

import base64
import re

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext

from devices.services.commands import command_cancel, command_issue
from devices.services.devices import device_register

pytestmark = pytest.mark.django_db


def scrape(headers: dict | None = None) -> tuple[int, str, dict]:
    response = Client().get("/metrics", headers=headers or {})
    return response.status_code, response.content.decode(), dict(response.headers)


def commands(body: str) -> dict[str, float]:
    return {s: float(v) for s, v in re.findall(r'^iotgw_commands\{status="(\w+)"\} (\S+)$', body, re.M)}


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_metrics_are_open_when_no_token_is_set():
    assert scrape()[0] == 200


@override_settings(IOTGW_METRICS_TOKEN="scrape-s3cret")
@pytest.mark.parametrize("headers, status", [
    ({}, 401),
    ({"Authorization": "Bearer wrong"}, 401),
    ({"Authorization": "Bearer scrape-s3cret"}, 200),
    (basic("prometheus", "scrape-s3cret"), 200),
    (basic("prometheus", "wrong"), 401),
    ({"Authorization": "Basic %%%"}, 401),
    ({"Authorization": "Token scrape-s3cret"}, 401),
])
def test_a_configured_token_guards_the_scrape(headers, status):
    code, body, response_headers = scrape(headers)
    assert code == status
    if status == 401:
        assert "iotgw_" not in body and "Bearer" in response_headers["WWW-Authenticate"]


def test_command_counts_follow_commands_but_cost_one_query_per_interval():
    owner = get_user_model().objects.create_user("owner")
    device_register(device_id="d1", owner=owner)
    first = command_issue(user=owner, device_id="d1", name="reboot")
    command_issue(user=owner, device_id="d1", name="reboot")
    with override_settings(IOTGW_METRICS_COUNT_SECONDS=0):
        assert commands(scrape()[1])["queued"] == 2

    command_cancel(user=owner, command_id=first.id)
    with override_settings(IOTGW_METRICS_COUNT_SECONDS=3600), CaptureQueriesContext(connection) as queries:
        for _ in range(5):
            assert commands(scrape()[1])["queued"] == 2  # the last count, not a new one
    assert not [q for q in queries.captured_queries if "devices_command" in q["sql"]]

    with override_settings(IOTGW_METRICS_COUNT_SECONDS=0):
        counts = commands(scrape()[1])
    assert (counts["queued"], counts["cancelled"], counts["succeeded"]) == (1, 1, 0)


def test_history_tiers_show_rows_and_the_oldest_sample():
    from datetime import UTC, datetime

    from core.payloads import Sample
    from devices.services.telemetry import Inbound, telemetry_ingest

    device_register(device_id="d1")
    at = datetime(2026, 2, 3, 4, 5, tzinfo=UTC)
    telemetry_ingest(items=[Inbound("d1", [Sample(ts=at, data={"t": 1, "h": 2})])], received_at=at)
    if connection.vendor == "postgresql":
        with connection.cursor() as cur:
            cur.execute("ANALYZE devices_telemetry")  # the row count is the planner's estimate
    with override_settings(IOTGW_METRICS_COUNT_SECONDS=0):
        body = scrape()[1]
    rows = dict(re.findall(r'^iotgw_history_rows\{tier="(\w+)"\} (\S+)$', body, re.M))
    oldest = dict(re.findall(r'^iotgw_history_oldest_timestamp_seconds\{tier="(\w+)"\} (\S+)$', body, re.M))
    assert float(rows["minute"]) >= 0 and "hour" in rows
    day = datetime(2026, 2, 3, tzinfo=UTC).timestamp()
    assert day <= float(oldest["raw"]) <= at.timestamp()
    if connection.vendor == "postgresql":
        assert float(dict(re.findall(r'^iotgw_history_bytes\{tier="(\w+)"\} (\S+)$', body, re.M))["raw"]) > 0
    else:
        assert float(rows["raw"]) == 1
