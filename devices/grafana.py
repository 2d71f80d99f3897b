"""Stable SQL views for Grafana's PostgreSQL data source, and a read-only role that sees only them (docs/grafana.md).

The views live in their own schema, `grafana`, and are dropped before every `migrate` and made
again after it (pre_migrate / post_migrate), so a migration that rebuilds the telemetry table is
never blocked by a view that depends on it, and the views always describe the current tables.
The role reads the views with their owner's rights and has no grant on any table: it cannot see
device secrets, users, sessions or tokens. Its SELECT on views made later comes from the schema's
default privileges, so recreating the views keeps it.
"""

from __future__ import annotations

import logging
import re

from django.db import DatabaseError, connections, transaction
from psycopg import sql

from devices.models import Device, RollupHour, RollupMinute, Telemetry

logger = logging.getLogger("iotgw.grafana")

SCHEMA = "grafana"
ROLE_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

def _rollup(table: str) -> str:
    return ("SELECT device_id, metric, bucket AS ts, min, max, sum / count AS avg, count, first, last "
            f"FROM {table}")


# name -> SELECT; the columns are the contract (docs/grafana.md): add, never rename or drop.
VIEWS: dict[str, str] = {
    "devices": f"SELECT id AS device_id, name, enabled, online, last_seen FROM {Device._meta.db_table}",
    "metrics": f"SELECT d.id AS device_id, k.metric FROM {Device._meta.db_table} AS d "
               "CROSS JOIN LATERAL jsonb_object_keys(d.latest) AS k(metric)",
    # One row per metric value: numbers (and booleans as 0/1) in `value`, strings in `text`.
    "telemetry": f"SELECT t.device_id, m.key AS metric, t.ts, "
                 "CASE jsonb_typeof(m.value) WHEN 'number' THEN m.value::double precision "
                 "WHEN 'boolean' THEN CASE WHEN m.value::boolean THEN 1.0 ELSE 0.0 END END AS value, "
                 "CASE WHEN jsonb_typeof(m.value) = 'string' THEN m.value #>> '{}' END AS text "
                 f"FROM {Telemetry._meta.db_table} AS t CROSS JOIN LATERAL jsonb_each(t.data) AS m",
    # The rollups (docs/history.md): numeric metrics only, one row per device, metric and bucket.
    "telemetry_minute": _rollup(RollupMinute._meta.db_table),
    "telemetry_hour": _rollup(RollupHour._meta.db_table),
}
TABLES = (Device._meta.db_table, Telemetry._meta.db_table, RollupMinute._meta.db_table, RollupHour._meta.db_table)


def views_drop(using: str = "default") -> None:
    """Drop the views (before migrations run)."""
    connection = connections[using]
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cur:
        for name in VIEWS:
            cur.execute(f"DROP VIEW IF EXISTS {SCHEMA}.{name}")


def views_create(using: str = "default") -> bool:
    """Make the schema and the views (after migrations); False when the tables they read are not there yet."""
    connection = connections[using]
    if connection.vendor != "postgresql":
        return False
    tables = set(connection.introspection.table_names())
    if not set(TABLES) <= tables:
        return False
    try:
        with transaction.atomic(using=using), connection.cursor() as cur:
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
            for name, select in VIEWS.items():
                cur.execute(f"CREATE OR REPLACE VIEW {SCHEMA}.{name} AS {select}")
    except DatabaseError as exc:  # a partial migration state: the views come back with the next migrate
        logger.warning("Grafana views not made: %s", exc)
        return False
    return True


def role_grant(*, name: str, password: str | None, using: str = "default") -> None:
    """Create (or update) a login role that may read the Grafana views and nothing else, read-only."""
    if not ROLE_RE.fullmatch(name):
        raise ValueError(f"role name {name!r}: lowercase letters, digits and _ only")
    connection = connections[using]
    role, schema = sql.Identifier(name), sql.Identifier(SCHEMA)
    database = sql.Identifier(connection.settings_dict["NAME"])
    views_create(using)
    with transaction.atomic(using=using), connection.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [name])
        verb = "ALTER" if cur.fetchone() else "CREATE"
        statement = sql.SQL(f"{verb} ROLE {{}} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT").format(role)
        if password is not None:
            statement += sql.SQL(" PASSWORD {}").format(sql.Literal(password))
        for step in (
            statement,
            # A dashboard never writes, and a runaway panel query ends on its own.
            sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(role),
            sql.SQL("ALTER ROLE {} SET statement_timeout = '30s'").format(role),
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(database, role),
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, role),
            sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(schema, role),
            sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT SELECT ON TABLES TO {}").format(schema, role),
        ):
            cur.execute(step.as_string(cur.connection))


def on_pre_migrate(sender: object, using: str = "default", **kwargs: object) -> None:
    """pre_migrate receiver."""
    views_drop(using)


def on_post_migrate(sender: object, using: str = "default", **kwargs: object) -> None:
    """post_migrate receiver."""
    views_create(using)
