"""Grafana's role reads the stable views over a real PostgreSQL connection, and nothing else; it cannot write."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection

from core.transfer import read_rows
from devices.grafana import VIEWS, views_create, views_drop
from devices.services.devices import device_register
from devices.services.telemetry_import import telemetry_import
from testing.partitions import new_partitions_dropped

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def no_partitions_left():
    with new_partitions_dropped():  # committed samples of 2026-01-01 would stay for other tests' maintenance
        yield


@pytest.fixture
def role(no_partitions_left):
    if connection.vendor != "postgresql":
        pytest.skip("Grafana's PostgreSQL data source: the views and role exist on PostgreSQL only")
    name, password = f"grafana_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    call_command("grafana_role", "--name", name, "--password", password)
    settings = connection.settings_dict
    conninfo = psycopg.conninfo.make_conninfo(host=settings["HOST"] or "127.0.0.1", port=settings["PORT"] or 5432,
                                              dbname=settings["NAME"], user=name, password=password)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        yield conn
    with connection.cursor() as cur:
        cur.execute(f"DROP OWNED BY {name}; DROP ROLE {name}")


def fails(conn, statement: str) -> str:
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(statement)
    return type(caught.value).__name__


def test_the_role_charts_telemetry_from_the_views(role):
    device_register(device_id="g1", name="Boiler")
    line = b'{"device":"g1","ts":"2026-01-01T00:00:00+00:00","data":{"temp":21.5,"on":true,"state":"ok"}}\n'
    assert telemetry_import(rows=read_rows(io.BytesIO(line))).imported == 1
    rows = role.execute("SELECT device_id, metric, ts, value, text FROM grafana.telemetry "
                        "WHERE device_id = 'g1' AND ts >= '2026-01-01' ORDER BY metric").fetchall()
    assert [(r[1], r[3], r[4]) for r in rows] == [("on", 1.0, None), ("state", None, "ok"), ("temp", 21.5, None)]
    assert role.execute("SELECT device_id, name FROM grafana.devices").fetchall() == [("g1", "Boiler")]
    assert role.execute("SELECT count(*) FROM grafana.metrics").fetchone() == (0,)  # latest: only what devices sent
    hour = role.execute("SELECT metric, ts, min, max, avg, count FROM grafana.telemetry_hour "
                        "WHERE device_id = 'g1'").fetchall()
    assert [(r[0], r[2], r[3], r[4], r[5]) for r in hour] == [("temp", 21.5, 21.5, 21.5, 1)]  # numbers only


def test_the_role_cannot_write_or_read_secrets_users_or_raw_tables(role):
    device_register(device_id="g2")
    for table in ("devices_device", "devices_telemetry", "devices_rolluphour", "devices_apitoken", "auth_user",
                  "django_session"):
        assert fails(role, f"SELECT * FROM {table} LIMIT 1") == "InsufficientPrivilege", table
    insert = "INSERT INTO devices_telemetry (device_id, ts, data, received_at) VALUES ('g2', now(), '{}', now())"
    assert fails(role, insert) == "ReadOnlySqlTransaction"  # its sessions are read-only by default
    role.execute("SET default_transaction_read_only = off")  # which it may undo: its grants still hold
    assert fails(role, insert) == "InsufficientPrivilege"
    assert fails(role, "DELETE FROM grafana.devices") == "InsufficientPrivilege"
    for schema in ("public", "grafana"):
        assert fails(role, f"CREATE TABLE {schema}.mine (x int)") == "InsufficientPrivilege"
    columns = {r[0] for r in role.execute("SELECT column_name FROM information_schema.columns "
                                          "WHERE table_schema = 'grafana'").fetchall()}
    assert not {"secret_hash", "mqtt_password_hash", "password", "key_hash"} & columns


def test_views_made_again_after_a_migrate_are_still_readable_by_the_role(role):
    views_drop()
    assert views_create()
    assert role.execute("SELECT count(*) FROM grafana.telemetry").fetchone() == (0,)
    assert {r[0] for r in role.execute("SELECT table_name FROM information_schema.views "
                                       "WHERE table_schema = 'grafana'").fetchall()} == set(VIEWS)


def grafana_macros(raw: str, *, devices: list[str], metric: str) -> str:
    """The example dashboard's SQL as Grafana's PostgreSQL data source expands it (its macros and variables)."""
    return (raw.replace("$__timeGroupAlias(ts, $__interval)", 'floor(extract(epoch from ts)/60)*60 AS "time"')
            .replace("$__timeFilter(ts)", "ts BETWEEN '2025-12-31T00:00:00Z' AND '2026-01-02T00:00:00Z'")
            .replace("$device", ",".join(f"'{d}'" for d in devices)).replace("$metric", metric))


def test_the_example_dashboards_queries_run_as_the_role(role):
    device_register(device_id="g3")
    lines = b"".join(b'{"device":"g3","ts":"2026-01-01T00:00:%02d+00:00","data":{"temp":%d}}\n' % (s, s)
                     for s in range(0, 60, 10))
    telemetry_import(rows=read_rows(io.BytesIO(lines)))
    dashboard = json.loads((Path(__file__).parents[2] / "docs" / "grafana-dashboard.json").read_text())
    queries = [t["rawSql"] for p in dashboard["panels"] for t in p["targets"]]
    queries += [v["query"] for v in dashboard["templating"]["list"]]
    answers = [role.execute(grafana_macros(q, devices=["g3"], metric="temp")).fetchall() for q in queries]
    assert answers[0] == [(1767225600, "g3", 25.0)]  # one minute bucket: the average of 0..50
    assert answers[1] == [(1767225600, 0.0, 50.0, 25.0)]  # the hour's rollup
    assert [r[0] for r in answers[2]] == ["g3"] and ("g3",) in answers[3]
