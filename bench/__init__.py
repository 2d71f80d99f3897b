"""`make bench`: the gateway under load, against real Redis, Mosquitto and PostgreSQL (see bench/README.md)."""
