"""`grafana_role --password PW [--name iotgw_grafana]`: a read-only PostgreSQL role for Grafana (docs/grafana.md)."""

from django.core.management import BaseCommand, CommandError
from django.db import DatabaseError, connection

from devices.grafana import SCHEMA, VIEWS, role_grant


class Command(BaseCommand):
    help = (f"Create or update a login role that may SELECT the views in schema {SCHEMA!r} ("
            f"{', '.join(VIEWS)}) and nothing else, read-only; needs CREATEROLE (or run it as a superuser).")

    def add_arguments(self, parser):
        parser.add_argument("--name", default="iotgw_grafana", help="role name (default iotgw_grafana)")
        parser.add_argument("--password", help="its password (omit to keep the current one of an existing role)")

    def handle(self, *args, name, password, **options):
        if connection.vendor != "postgresql":
            raise CommandError("Grafana's views and role need PostgreSQL (DATABASE_URL)")
        try:
            role_grant(name=name, password=password)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        except DatabaseError as exc:
            raise CommandError(f"PostgreSQL refused: {exc}") from None
        self.stdout.write(f"role {name}: may read {', '.join(f'{SCHEMA}.{v}' for v in VIEWS)}")
