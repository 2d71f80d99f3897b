"""GET /api/devices/{id}/telemetry/aggregate: buckets of one metric, from the tier that fits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client

from core.payloads import Sample
from devices.rollups import rollups_catch_up
from devices.services.devices import device_register
from devices.services.telemetry import Inbound, telemetry_ingest
from devices.services.tokens import token_create

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)


@pytest.fixture
def token():
    alice = get_user_model().objects.create_user("alice")
    device_register(device_id="d1", owner=alice)
    samples = [Sample(ts=T0 + timedelta(seconds=10 * i), data={"temp": i, "ok": True}) for i in range(720)]  # 2 h
    telemetry_ingest(items=[Inbound("d1", samples)], received_at=T0)
    if connection.vendor == "postgresql":  # fresh samples are the rollup job's there
        rollups_catch_up(now=T0 + timedelta(hours=3), since=T0)
    return token_create(user=alice)


def get(token, query: str):
    return Client().get(f"/api/devices/d1/telemetry/aggregate?{query}", HTTP_AUTHORIZATION=f"Bearer {token}")


def test_hourly_buckets_come_from_the_hour_rollups_with_every_statistic(token):
    reply = get(token, "metric=temp&since=2026-05-04T10:00:00Z&until=2026-05-04T12:00:00Z&bucket=3600")
    assert reply.status_code == 200
    body = reply.json()
    assert (body["tier"], body["bucket"], len(body["items"])) == ("hour", 3600, 2)
    first = body["items"][0]
    assert first == {"ts": "2026-05-04T10:00:00.000000+00:00", "min": 0, "max": 359, "avg": 179.5, "count": 360,
                     "first": 0, "first_ts": "2026-05-04T10:00:00.000000+00:00", "last": 359,
                     "last_ts": "2026-05-04T10:59:50.000000+00:00"}


def test_a_bucket_finer_than_a_minute_reads_raw_samples(token):
    body = get(token, "metric=temp&since=2026-05-04T10:00:00Z&until=2026-05-04T10:01:00Z&bucket=30").json()
    assert body["tier"] == "raw"
    assert [(i["count"], i["min"], i["max"]) for i in body["items"]] == [(3, 0, 2), (3, 3, 5)]


def test_points_picks_a_round_bucket(token):
    body = get(token, "metric=temp&since=2026-05-04T10:00:00Z&until=2026-05-04T12:00:00Z&points=10").json()
    assert (body["bucket"], body["tier"], len(body["items"])) == (900, "minute", 8)
    assert sum(i["count"] for i in body["items"]) == 720


def test_booleans_and_missing_metrics_give_no_buckets(token):
    for metric in ("ok", "nothing"):
        query = f"metric={metric}&since=2026-05-04T10:00:00Z&until=2026-05-04T12:00:00Z&bucket=60"
        assert get(token, query).json()["items"] == []


@pytest.mark.parametrize("query", ["metric=temp&since=2026-05-04T12:00:00Z&until=2026-05-04T10:00:00Z",
                                   "metric=temp&since=0&bucket=1", "metric=no%20spaces", "metric=temp&bucket=0",
                                   "metric=temp&until=253402300799999&bucket=31536000&since=253300000000000"])
def test_a_bad_range_or_bucket_is_a_400(token, query):
    reply = get(token, query)
    assert reply.status_code == 400 and reply.json()["error"]["code"] == "bad_request"
