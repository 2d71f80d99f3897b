"""The statements behind a fleet-wide command's insert and the dispatcher's claims and group writes on PostgreSQL.

Each is one statement per batch, whatever its size.

Django's `bulk_update` builds a `CASE WHEN` per row and field: for one command's `sent` mark it cost
more CPU in the bridge than the rest of the command's path, and for a fleet-wide command's groups it
was half the bridge's time (py-spy during bench/fleet.py). Here the changed rows travel as one JSON
document that orjson encodes in C and PostgreSQL unpacks itself (`json_to_recordset`), as
devices/telemetry_sql.py does for samples. Other databases (SQLite for the all-in-one gateway), and
a row orjson cannot write (an integer past 64 bits in a device's result), use the ORM.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import orjson
from django.db import connection

from devices.models import Command, Device

COMMAND = Command._meta.db_table
DEVICE = Device._meta.db_table


def commands_write(commands: Sequence[Command], fields: Sequence[str]) -> None:
    """Save these fields of these commands (rows the caller has locked), as `bulk_update` would."""
    if not commands:
        return
    if connection.vendor != "postgresql":
        Command.objects.bulk_update(commands, list(fields))
        return
    try:
        doc = orjson.dumps([{"id": c.id, **{f: getattr(c, f) for f in fields}} for c in commands]).decode()
    except TypeError:  # orjson.JSONEncodeError: a value only the ORM's encoder writes (or refuses)
        Command.objects.bulk_update(commands, list(fields))
        return
    # Field names are their columns here (none is a foreign key); the types are the ones migrations made.
    record = ", ".join(f"{f} {Command._meta.get_field(f).db_type(connection)}" for f in fields)
    assignments = ", ".join(f"{f} = v.{f}" for f in fields)
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {COMMAND} AS c SET {assignments} "
                       f"FROM json_to_recordset(%s::json) AS v(id uuid, {record}) WHERE c.id = v.id", [doc])


def commands_insert(commands: Sequence[Command]) -> None:
    """Insert new commands as `bulk_create` would (IntegrityError on a key already taken), in one statement."""
    if connection.vendor != "postgresql":
        Command.objects.bulk_create(commands, batch_size=1000)
        return
    fields = Command._meta.concrete_fields
    try:
        doc = orjson.dumps([{f.column: getattr(c, f.attname) for f in fields} for c in commands]).decode()
    except TypeError:  # orjson.JSONEncodeError
        Command.objects.bulk_create(commands, batch_size=1000)
        return
    columns = ", ".join(str(f.column) for f in fields)
    record = ", ".join(f"{f.column} {f.db_type(connection)}" for f in fields)
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {COMMAND} ({columns}) "
                       f"SELECT {columns} FROM json_to_recordset(%s::json) AS v({record})", [doc])


def commands_claim(*, owner: str, now: datetime, until: datetime, device_ids: Sequence[str] | None,
                   exclude: Sequence[uuid.UUID], limit: int, transports: Sequence[str] | None) -> list[Command]:
    """command_claim's lease in one statement: pick (`FOR UPDATE SKIP LOCKED`, oldest first), lease, return."""
    where = []
    params: dict[str, object] = {"owner": owner, "now": now, "until": until, "exclude": list(exclude), "limit": limit}
    if device_ids is not None:
        where.append("AND q.device_id = ANY(%(devices)s::text[])")
        params["devices"] = list(device_ids)
    if transports is not None:
        where.append("AND d.transport = ANY(%(transports)s::text[])")
        params["transports"] = list(transports)
    sql = f"""
        UPDATE {COMMAND} AS c SET lease_owner = %(owner)s, lease_until = %(until)s
        FROM (SELECT q.id FROM {COMMAND} AS q JOIN {DEVICE} AS d ON d.id = q.device_id
              WHERE q.status = 'queued' AND q.expires_at > %(now)s AND d.online AND d.enabled
                AND (q.lease_until IS NULL OR q.lease_until < %(now)s OR q.lease_owner = %(owner)s)
                AND NOT (q.id = ANY(%(exclude)s::uuid[])) {" ".join(where)}
              ORDER BY q.created_at LIMIT %(limit)s FOR UPDATE OF q SKIP LOCKED) AS pick
        WHERE c.id = pick.id
        RETURNING c.*"""
    return sorted(Command.objects.raw(sql, params), key=lambda c: (c.created_at, c.pk))


def answers_expected(horizon: dict[str, datetime]) -> None:
    """command_claim's `_expect_answers` in one statement: each device's `answer_until` grown to its horizon.

    The rows are locked in id order, as ingest locks them (a claim and another bridge's batch cannot deadlock);
    a device whose horizon is already as late is neither locked nor written.
    """
    doc = orjson.dumps([{"id": device_id, "at": at} for device_id, at in sorted(horizon.items())]).decode()
    with connection.cursor() as cursor:
        cursor.execute(f"""
            UPDATE {DEVICE} AS d SET answer_until = g.at
            FROM (SELECT x.id, h.at FROM {DEVICE} AS x JOIN json_to_recordset(%s::json) AS h(id text, at timestamptz)
                  ON h.id = x.id WHERE x.answer_until IS NULL OR x.answer_until < h.at
                  ORDER BY x.id FOR UPDATE OF x) AS g
            WHERE d.id = g.id""", [doc])
