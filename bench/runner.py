"""Orchestrates the benchmark: scenarios (gateway, naive, scale-out), phases at set rates, the report."""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import subprocess
import threading
import time
import uuid
from pathlib import Path

from bench.stack import RESULTS, BenchStack, PrivateBroker, ensure_database, migrate
from bench.stats import latency_summary, ratio

DEFAULTS = {
    "full": {"rates": [1000, 5000], "max_rate": 20000, "batch_rate": 40000, "warmup": 4.0, "window": 15.0,
             "devices": 1000, "dashboards": 2, "slice_dashboards": 100, "naive_rates": [1000, 5000],
             "scaleout": True},
    "quick": {"rates": [1000, 5000], "max_rate": 0, "batch_rate": 0, "warmup": 2.0, "window": 4.0, "devices": 200,
              "dashboards": 2, "slice_dashboards": 20, "naive_rates": [1000], "scaleout": False},
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="a short run (under a minute): fewer phases, short windows")
    p.add_argument("--rates", help="comma-separated offered rates (msg/s) for the latency phases")
    p.add_argument("--max-rate", type=float, help="offered rate of the throughput (saturation) phase; 0 skips it")
    p.add_argument("--batch-rate", type=float,
                   help="offered samples/s of the batched-devices phase (arrays of --batch-size samples); 0 skips it")
    p.add_argument("--batch-size", type=int, default=10, help="samples per message in the batched-devices phase")
    p.add_argument("--load-client", choices=["lean", "paho"], default="lean",
                   help="the publishers' MQTT client: lean (raw socket, default) or paho")
    p.add_argument("--warmup", type=float, help="seconds of each phase before the measured window")
    p.add_argument("--window", type=float, help="seconds of each phase's measured (steady) window")
    p.add_argument("--devices", type=int, help="simulated devices")
    p.add_argument("--dashboards", type=int, help="WebSocket dashboards subscribed to every device")
    p.add_argument("--slice-dashboards", type=int,
                   help="more dashboards, each subscribed to its own slice of the devices (1/N of the fleet)")
    p.add_argument("--publishers", type=int, default=2, help="publisher processes")
    p.add_argument("--dashboard-procs", type=int, default=2, help="processes the dashboards run in")
    p.add_argument("--naive-rates", help="comma-separated offered rates for the naive bridge; empty skips it")
    p.add_argument("--no-scaleout", action="store_true", help="skip the two-bridge, two-web scenario")
    p.add_argument("--only", help="run only these scenarios "
                                  "(comma-separated: gateway,naive,scaleout,commands,coap,devtrans,fleet,overload,"
                                  "sockets,notify,dialects,alarms,failover; "
                                  "export, history and soak, which run only when named: bench/export.py, "
                                  "bench/history.py, and --soak-seconds of steady load)")
    p.add_argument("--failover-rate", type=float, default=2000.0,
                   help="offered samples/s of the failover scenario (a bridge, a web and the Redis master killed)")
    p.add_argument("--fleet", type=int, default=1000, help="devices of the fleet-wide command phase")
    p.add_argument("--sockets", type=int, default=5000,
                   help="dashboard sockets on one web process in the sockets scenario, one device each, 1 update/s")
    p.add_argument("--overload-rate", type=float,
                   help="offered samples/s of the overload scenario (in messages of --batch-size; default 3 × "
                        "--max-rate, or 60,000 in quick mode); 0 skips it")
    p.add_argument("--overload-seconds", type=float, help="how long the overload lasts (default 300, quick 20)")
    p.add_argument("--soak-rate", type=float,
                   help="offered samples/s of the soak scenario, one per message (default half of --max-rate, or "
                        "5,000); 0 skips it")
    p.add_argument("--soak-seconds", type=float,
                   help="how long the soak lasts (default 1800, quick 60); RSS is recorded every 10 s")
    p.add_argument("--broker", choices=["system", "private"], default="private",
                   help="private (default): start Mosquitto on a free port with compose/mosquitto.conf's limits; "
                        "system: the running broker at --mqtt-url, as configured")
    p.add_argument("--mqtt-url", default=os.environ.get("BENCH_MQTT_URL", "mqtt://127.0.0.1:1883"))
    p.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/7"))
    p.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL",
                                                            "postgres://postgres@127.0.0.1:5432/iotgw_bench"))
    p.add_argument("--out", default=str(RESULTS / "latest.json"))
    p.add_argument("--env", dest="gateway_env", action="append", default=[], metavar="NAME=VALUE",
                   help="extra environment for the gateway's web and bridge processes (e.g. IOTGW_MAX_BATCH=1000)")
    args = p.parse_args(argv)
    d = DEFAULTS["quick" if args.quick else "full"]
    args.rates = [float(r) for r in args.rates.split(",")] if args.rates else d["rates"]
    args.naive_rates = ([float(r) for r in args.naive_rates.split(",") if r] if args.naive_rates is not None
                        else d["naive_rates"])
    for name in ("max_rate", "batch_rate", "warmup", "window", "devices", "dashboards", "slice_dashboards"):
        if getattr(args, name) is None:
            setattr(args, name, d[name])
    args.scaleout = d["scaleout"] and not args.no_scaleout
    if args.overload_rate is None:
        args.overload_rate = 3 * args.max_rate if args.max_rate else 60000.0
    if args.overload_seconds is None:
        args.overload_seconds = 20.0 if args.quick else 300.0
    if args.soak_rate is None:
        args.soak_rate = args.max_rate / 2 if args.max_rate else 5000.0
    if args.soak_seconds is None:
        args.soak_seconds = 60.0 if args.quick else 1800.0
    args.only = (set(args.only.split(",")) if args.only
                 else {"gateway", "naive", "scaleout", "commands", "coap", "devtrans", "fleet", "overload", "sockets",
                       "notify", "dialects", "alarms", "failover"})
    return args


class Bench:
    """One benchmark run: the environment, the seeded registry, and the results as they come."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.run_id = uuid.uuid4().hex[:6]
        self.logdir = RESULTS / "logs"
        self.logdir.mkdir(parents=True, exist_ok=True)
        for old in self.logdir.glob("*.log"):
            old.unlink()
        self.broker = PrivateBroker(self.logdir) if args.broker == "private" else None
        self.mqtt_url = self.broker.url if self.broker else args.mqtt_url
        self.env = self._env()
        os.environ.update({k: self.env[k] for k in ("DATABASE_URL", "REDIS_URL", "MQTT_URL")})
        os.environ["DJANGO_SETTINGS_MODULE"] = "iotgw.settings"
        ensure_database(args.database_url, args.database_url.rsplit("/", 1)[1])
        migrate(self.env)
        import django

        django.setup()
        from bench.procs import Monitor

        self.monitor = Monitor()
        self.monitor.add_named("redis", "redis-server")
        self.monitor.add_named("postgres (all)", "postgres")
        if self.broker:
            self.monitor.add("mosquitto", [self.broker.popen.pid])
        else:
            self.monitor.add_named("mosquitto", "mosquitto")
        self.token = self._seed()
        self.results: dict = {"run_id": self.run_id, "machine": machine(), "config": self._config(),
                              "broker_probe": self._probe(), "scenarios": {}}

    def _probe(self) -> dict:
        from bench.probe import receive_maximum_probe

        host, port = self.mqtt_url.split("://", 1)[1].rsplit("@", 1)[-1].rsplit(":", 1)
        result = receive_maximum_probe(host, int(port))
        print(f"broker probe: Receive Maximum {result['receive_maximum']} → {result['in_flight_unacked']} messages "
              f"in flight unacked ({'honoured' if result['honoured'] else 'NOT honoured'})", flush=True)
        return result

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO_SETTINGS"))}
        env.update(
            DJANGO_SETTINGS_MODULE="iotgw.settings", DJANGO_DEBUG="0", DATABASE_URL=self.args.database_url,
            REDIS_URL=self.args.redis_url, MQTT_URL=self.mqtt_url, MQTT_CLIENT_ID=f"bench-{self.run_id}",
            MQTT_SESSION_EXPIRY="120", IOTGW_LOG_LEVEL="WARNING", DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
            IOTGW_HEARTBEAT_SECONDS="0.5", PYTHONUNBUFFERED="1",
        )
        return env

    def _config(self) -> dict:
        a = self.args
        return {"mode": "quick" if a.quick else "full", "rates": a.rates, "max_rate": a.max_rate,
                "batch_rate": a.batch_rate, "batch_size": a.batch_size, "load_client": a.load_client,
                "warmup_s": a.warmup, "window_s": a.window, "devices": a.devices, "dashboards": a.dashboards,
                "slice_dashboards": a.slice_dashboards,
                "publishers": a.publishers, "dashboard_procs": a.dashboard_procs, "naive_rates": a.naive_rates,
                "failover_rate": a.failover_rate, "broker": a.broker,
                "broker_limits": self.broker.limits if self.broker else "as configured",
                "mqtt_url": self.mqtt_url, "redis_url": a.redis_url,
                "database": a.database_url.rsplit("/", 1)[1], "qos": 1, "sample_bytes": sample_size(),
                "gateway_env": a.gateway_env}

    def _seed(self) -> str:
        from django.contrib.auth import get_user_model
        from django.db import connection

        from devices.models import ApiToken, BridgeHeartbeat, Device
        from devices.services.tokens import token_create

        with connection.cursor() as cur:
            cur.execute("TRUNCATE devices_telemetry")
        Device.objects.all().delete()
        BridgeHeartbeat.objects.all().delete()
        ApiToken.objects.all().delete()
        devices = [Device(id=f"bench-{kind}-{i:05d}", name=f"bench {kind} {i}", secret_hash="-", enabled=True)
                   for kind in ("g", "n", "s", "o", "w", "k", "f") for i in range(self.args.devices)]
        Device.objects.bulk_create(devices, batch_size=2000)
        self.vacuum(full=True)
        user, _ = get_user_model().objects.get_or_create(username="bench-staff", defaults={"is_staff": True})
        return token_create(user=user, name="bench")

    def vacuum(self, *, full: bool = False) -> None:
        """Clear the dead rows of the tables ingest rewrites (each batch updates its devices).

        PostgreSQL's autovacuum does this in the background; on a server where it is off
        (this machine's is) the device table grew to 179 MB of dead rows for 3000 live ones
        over a day of runs, and every batch's device lock and update slowed down with it.
        """
        from django.db import connection

        with connection.cursor() as cur:
            for table in ("devices_device", "devices_bridgeheartbeat"):
                cur.execute(f"VACUUM ({'FULL, ' if full else ''}ANALYZE) {table}")

    def devices(self, kind: str) -> tuple[str, ...]:
        return tuple(f"bench-{kind}-{i:05d}" for i in range(self.args.devices))

    # --- scenarios ------------------------------------------------------------------------

    def scenario(self, name: str, *, webs: int, bridges: int, naive: bool, rates: list[tuple],
                 one_device_sockets: int = 0) -> dict:
        """Start the processes, the dashboards, run each phase, and collect what the dashboards saw.

        `rates` are (offered samples/s, samples per message[, phase() keywords]) per phase. With
        `one_device_sockets`, that many dashboards watch one device each (round the fleet) instead of the
        slice dashboards, and the web process's memory is read before and after they open.
        """
        import psutil

        from bench.dashboards import Dashboards, slices

        a = self.args
        print(f"\n== {name}: {webs} web, {'naive bridge' if naive else f'{bridges} bridge(s)'}, "
              f"{a.dashboards} dashboards watching every device + {a.slice_dashboards} watching a slice each, "
              f"{a.devices} devices", flush=True)
        self.vacuum()  # what the previous scenario left behind, as autovacuum would between them
        # One bridge subscribes to devices/# itself, as deployed by default; several share a group.
        group = {"MQTT_SHARE_GROUP": f"bench{self.run_id}"} if bridges > 1 and not naive else {}
        stack = BenchStack(dict(self.env, **group, **dict(kv.split("=", 1) for kv in self.args.gateway_env)),
                           self.logdir, name)
        kind = {"gateway": "g", "naive": "n", "scaleout": "s", "overload": "o", "sockets": "w", "soak": "k"}[name]
        out: dict = {"webs": webs, "bridges": 0 if naive else bridges, "naive": naive, "phases": []}
        try:
            web_pids = [stack.start_web().popen.pid for _ in range(webs)]
            for i, pid in enumerate(web_pids):
                self.monitor.add(f"web{i + 1}", [pid])
            if naive:
                naive_proc = stack.start_naive()
                self.monitor.add("naive bridge", [naive_proc.popen.pid])
            else:
                for i in range(bridges):
                    proc = stack.start_bridge(f"bench-{self.run_id}-{name}-{i + 1}")
                    self.monitor.add(f"bridge{i + 1}", [proc.popen.pid])
            fleet = list(self.devices(kind))
            if one_device_sockets:
                self.views = [fleet] * a.dashboards + [[fleet[i % len(fleet)]] for i in range(one_device_sockets)]
            else:
                self.views = [fleet] * a.dashboards + (slices(fleet, a.slice_dashboards) if a.slice_dashboards else [])
            web = psutil.Process(web_pids[0]) if one_device_sockets else None
            rss_idle = web.memory_info().rss if web else 0
            dashes = Dashboards(stack.ws_urls, self.token, self.views, a.dashboard_procs)
            dashes.wait_ready(timeout=max(70.0, one_device_sockets / 50))
            if web:
                rss = web.memory_info().rss
                out["sockets"] = {"count": len(self.views), "web_rss_idle_mib": round(rss_idle / 2**20, 1),
                                  "web_rss_open_mib": round(rss / 2**20, 1),
                                  "kib_per_socket": round((rss - rss_idle) / len(self.views) / 1024, 1)}
                print(f"   {out['sockets']}", flush=True)
            self.monitor.add("dashboards (load)", dashes.pids)
            for i, (rate, batch, *more) in enumerate(rates):
                extra = more[0] if more else {}
                if naive and i:
                    # A fresh naive bridge (clean session) per phase: the last phase's backlog is dropped, not
                    # counted in this one; what it never stored is already counted as missing there.
                    naive_proc.kill()
                    naive_proc = stack.start_naive()
                    self.monitor.add("naive bridge", [naive_proc.popen.pid])
                out["phases"].append(self.phase(kind, rate, batch, **extra))
            seen = dashes.stop()
            for phase in out["phases"]:
                self.dashboard_view(phase, seen)
            out["stored_total"], out["stored_distinct"] = self.totals(kind)
            out["published_total"] = sum(p["acked"] for p in out["phases"])
            print(f"   rows {out['stored_total']} = distinct (device, ts) {out['stored_distinct']}; "
                  f"published {out['published_total']}", flush=True)
        finally:
            stack.stop()
            for role in [r for r in list(self.monitor._roles) if r.startswith(("web", "bridge", "naive", "dash"))]:
                self.monitor.remove(role)
        return out

    def phase(self, kind: str, rate: float, batch: int = 1, *, window: float | None = None,
              drain_timeout: float = 20.0, series_every: float | None = None) -> dict:
        """Offer `rate` samples/s (in messages of `batch`) for warmup + window seconds; measure over the window."""
        from bench.load import LoadPlan, run_load

        a = self.args
        window = a.window if window is None else window
        host, port = self.mqtt_url.split("://", 1)[1].rsplit(":", 1)
        # The load runs a second past the window, so that no publisher exits inside it.
        plan = LoadPlan(host=host, port=int(port), devices=self.devices(kind), rate=rate,
                        duration=a.warmup + window + 1.0, workers=a.publishers, batch=batch,
                        client=a.load_client)
        holder: dict = {}
        lead = 1.5
        started = time.time()
        thread = threading.Thread(target=lambda: holder.update(run_load(
            plan, lead=lead, on_started=lambda pids: self.monitor.add("publishers (load)", pids))))
        thread.start()
        time.sleep(max(0.0, started + lead + a.warmup - time.time()))
        self.monitor.start(series_every=series_every)
        w0 = time.time()
        time.sleep(window)
        w1 = time.time()
        usage = self.monitor.end()
        load_avg = round(os.getloadavg()[0], 2)
        thread.join()
        self.monitor.remove("publishers (load)")
        load = holder
        backlog = load["acked"] - self.count(kind, ts=(load["first_ms"], load["last_ms"]))
        stored, drained_s = self.drain(kind, load, timeout=drain_timeout)
        committed = self.count(kind, received=(w0, w1))
        per_device = self.per_device(kind, (load["first_ms"], load["last_ms"]))
        phase = {
            "offered_rate": rate, "batch": batch, "messages": load["messages"], "sent": load["sent"],
            "acked": load["acked"],
            "sent_rate": round(load["sent"] / plan.duration, 1), "window": [w0, w1], "range_ms": [
                load["first_ms"], load["last_ms"]],
            "stored": stored, "lost_stored": load["acked"] - stored, "drain_s": round(drained_s, 2),
            "backlog_at_end": backlog, "drain_rate": round(backlog / drained_s, 1) if drained_s > 0 else None,
            "stored_rate_window": round(committed / (w1 - w0), 1), "usage": usage,
            "publish_to_commit_ms": self.ingest_lag(kind, w0, w1),
            "publish_to_puback_ms": {k: _r(v) if isinstance(v, float) else v for k, v in load["puback_ms"].items()},
            "load_avg_1m": load_avg, "_per_device": per_device,
        }
        bridge_cpu = sum(u["cpu_pct"] for r, u in usage.items() if r.startswith(("bridge", "naive")))
        phase["bridge_cpu_ms_per_1k"] = round(10 * bridge_cpu / max(phase["stored_rate_window"], 1) * 1000, 1)
        print(f"   {rate:>7.0f} samples/s offered ({batch}/msg): sent {load['sent']} acked {load['acked']} "
              f"stored {stored} "
              f"(committed {phase['stored_rate_window']:.0f}/s in window, drained in {drained_s:.1f}s); "
              f"publish→puback {phase['publish_to_puback_ms']}; publish→bridge {phase['publish_to_commit_ms']}; "
              f"bridge {phase['bridge_cpu_ms_per_1k']} CPU-ms/1k; load avg {load_avg}",
              flush=True)
        return phase

    def drain(self, kind: str, load: dict, timeout: float = 20.0) -> tuple[int, float]:
        """Wait until everything acked is stored, or the count stops moving for 3 s, or the drain timeout."""
        # The timeout is only reached while a backlog is still draining (the count keeps moving).
        t0 = time.monotonic()
        last, since = -1, time.monotonic()
        while True:
            n = self.count(kind, ts=(load["first_ms"], load["last_ms"]))
            if n >= load["acked"]:
                return n, time.monotonic() - t0
            if n != last:
                last, since = n, time.monotonic()
            if time.monotonic() - since > 3 or time.monotonic() - t0 > timeout:
                return n, time.monotonic() - t0
            time.sleep(0.25)

    def count(self, kind: str, *, ts: tuple[int, int] | None = None, received: tuple[float, float] | None = None):
        from django.db import connection

        sql = "SELECT count(*) FROM devices_telemetry WHERE device_id >= %s AND device_id < %s"
        params: list = list(_kind_range(kind))
        if ts:
            sql += " AND ts BETWEEN to_timestamp(%s) AND to_timestamp(%s)"
            params += [ts[0] / 1000, ts[1] / 1000]
        if received:
            sql += " AND received_at >= to_timestamp(%s) AND received_at < to_timestamp(%s)"
            params += list(received)
        with connection.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchone()[0]

    def ingest_lag(self, kind: str, w0: float, w1: float) -> dict:
        """From publish (`t`) to the bridge's receive time (`received_at`), for samples published in the window."""
        from django.db import connection

        with connection.cursor() as cur:
            cur.execute(
                "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY lag), percentile_disc(0.99) WITHIN GROUP "
                "(ORDER BY lag), max(lag) FROM (SELECT extract(epoch FROM received_at) * 1000 - (data->>'t')::float "
                "AS lag FROM devices_telemetry WHERE device_id >= %s AND device_id < %s AND ts >= to_timestamp(%s) "
                "AND ts < to_timestamp(%s)) s", [*_kind_range(kind), w0, w1])
            p50, p99, top = cur.fetchone()
        return {"p50": _r(p50), "p99": _r(p99), "max": _r(top)}

    def per_device(self, kind: str, ts: tuple[int, int]) -> dict[str, int]:
        """Rows stored per device in the phase's ts range: what each slice dashboard should have seen."""
        from django.db import connection

        with connection.cursor() as cur:
            cur.execute("SELECT device_id, count(*) FROM devices_telemetry WHERE device_id >= %s AND device_id < %s "
                        "AND ts BETWEEN to_timestamp(%s) AND to_timestamp(%s) GROUP BY device_id",
                        [*_kind_range(kind), ts[0] / 1000, ts[1] / 1000])
            return dict(cur.fetchall())

    def totals(self, kind: str) -> tuple[int, int]:
        from django.db import connection

        with connection.cursor() as cur:
            cur.execute("SELECT count(*), count(DISTINCT (device_id, ts)) FROM devices_telemetry "
                        "WHERE device_id >= %s AND device_id < %s", list(_kind_range(kind)))
            return cur.fetchone()

    def dashboard_view(self, phase: dict, seen: list) -> None:
        """Per dashboard: samples of this phase received, delivered rate in the window; latency over the window.

        Dashboards watching every device are held to everything acked; a slice dashboard to
        the rows stored for its own devices (stored = acked is checked on its own).
        """
        lo, hi = phase["range_ms"][0] - 1, phase["range_ms"][1] + 1
        w0, w1 = (w * 1000 for w in phase["window"])
        span = phase["window"][1] - phase["window"][0]
        per_device = phase.pop("_per_device")
        full = self.args.dashboards
        received, delivered, window_lat, slice_missing, slice_lat = [], [], [], [], []
        slice_got = slice_expected = 0
        for index, (sent, lat) in enumerate(seen):
            got = sum(1 for t in sent if lo <= t <= hi)
            if index < full:
                received.append(got)
                delivered.append(sum(1 for t, d in zip(sent, lat, strict=True) if w0 <= t + d < w1))
                window_lat.extend(d for t, d in zip(sent, lat, strict=True) if w0 <= t < w1)
            else:
                expected = sum(per_device.get(d, 0) for d in self.views[index])
                slice_got += got
                slice_expected += expected
                slice_missing.append(expected - got)
                slice_lat.extend(d for t, d in zip(sent, lat, strict=True) if w0 <= t < w1)
        phase["dashboards"] = {
            "received_min": min(received, default=0), "received_max": max(received, default=0),
            "lost_min_dashboard": phase["acked"] - min(received, default=0),
            "delivered_rate_window_min": round(min(delivered, default=0) / span, 1),
        }
        if slice_missing:
            phase["slice_dashboards"] = {
                "count": len(slice_missing), "received": slice_got, "expected": slice_expected,
                "missing_worst_dashboard": max(slice_missing), "missing_total": slice_expected - slice_got,
                "latency_ms": {k: (round(v, 1) if isinstance(v, float) else v)
                               for k, v in latency_summary(slice_lat).items()},
            }
        scope = "window"
        if not window_lat:  # nothing published in the window arrived (the naive bridge's backlog): the whole phase
            scope = "phase"
            window_lat = [d for sent, lat in seen[:full] for t, d in zip(sent, lat, strict=True) if lo <= t <= hi]
        phase["latency_ms"] = {k: (round(v, 1) if isinstance(v, float) else v)
                               for k, v in latency_summary(window_lat).items()}
        phase["latency_ms"]["scope"] = scope
        lat = phase["latency_ms"]
        print(f"   {phase['offered_rate']:>7.0f} samples/s: full dashboards received "
              f"{phase['dashboards']['received_min']}..{phase['dashboards']['received_max']} of {phase['acked']}; "
              f"latency p50 {lat['p50']} p99 {lat['p99']} max {lat['max']} ms", flush=True)
        sd = phase.get("slice_dashboards")
        if sd:
            print(f"   {sd['count']} slice dashboards received {sd['received']} of {sd['expected']} "
                  f"(worst dashboard missing {sd['missing_worst_dashboard']}); latency p50 {sd['latency_ms']['p50']} "
                  f"p99 {sd['latency_ms']['p99']} ms", flush=True)

    def commands(self) -> dict:
        try:
            from bench import command_rtt
        except ImportError:
            return {"measured": False, "note": "commands not measured (bench/command_rtt.py absent)"}
        try:
            import asyncio
            import inspect

            quick = self.args.quick
            kwargs = {"env": self.env, "token": self.token, "logdir": self.logdir, "rate": 20.0,
                      "duration": 4.0 if quick else 15.0, "warmup": 1.0 if quick else 2.0}
            params = inspect.signature(command_rtt.measure).parameters
            result = asyncio.run(command_rtt.measure(**{k: v for k, v in kwargs.items() if k in params}))
            return {"measured": True, **(result if isinstance(result, dict) else {"result": result})}
        except Exception as exc:  # another engineer's module: report, don't fail the run
            return {"measured": False, "note": f"commands not measured: {exc!r}"[:300]}

    def devtrans(self) -> dict:
        """WebSocket and HTTP devices at the latency phases' rates, to dashboards, beside MQTT's (bench/devtrans.py)."""
        from bench import devtrans

        a = self.args
        devices = min(a.devices, 50)
        print(f"\n== devtrans: 1 web, 2 dashboards watching every device, {devices} WebSocket and {devices} HTTP "
              "devices, one sample per frame or request", flush=True)
        self.vacuum()
        result = devtrans.measure(env=self.env, token=self.token, logdir=self.logdir, rates=list(a.rates),
                                  duration=a.warmup + a.window, devices=devices, monitor=self.monitor)
        for phase in result["phases"]:
            print(devtrans.summary(phase), flush=True)
        return result

    def coap(self) -> dict:
        """CoAP devices at the latency phases' rates, to dashboards, beside MQTT's (bench/coap.py)."""
        from bench import coap

        a = self.args
        print(f"\n== coap: 1 web, 1 coapserver (plain mode), 2 dashboards watching every device, "
              f"{min(a.devices, 200)} devices, one sample per Confirmable POST", flush=True)
        self.vacuum()
        rates = [(r, 1) for r in a.rates] + [(max(a.rates), a.batch_size)]  # and the top rate in arrays
        result = coap.measure(env=self.env, token=self.token, logdir=self.logdir, rates=rates,
                              duration=a.warmup + a.window, devices=min(a.devices, 200), monitor=self.monitor)
        for phase in result["phases"]:
            print(coap.summary(phase), flush=True)
        return result

    def notify(self) -> dict:
        """Notifications: enqueue's cost, the sender's backlog rate and live latency (bench/notify.py)."""
        from bench import notify

        print("\n== notify: enqueue cost, one `manage.py notify` draining a backlog of webhooks, live latency",
              flush=True)
        result = notify.measure(env=self.env, logdir=self.logdir, events=200 if self.args.quick else 1000)
        print(notify.summary(result), flush=True)
        return result

    def fleet(self) -> dict:
        import asyncio

        from bench import fleet

        return asyncio.run(fleet.measure(env=self.env, token=self.token, logdir=self.logdir, devices=self.args.fleet))

    def run(self) -> dict:
        a = self.args
        rates = [(r, 1) for r in a.rates] + ([(a.max_rate, 1)] if a.max_rate else []) + (
            [(a.batch_rate, a.batch_size)] if a.batch_rate else [])
        telemetry = bool({"gateway", "naive", "scaleout"} & a.only)
        if "commands" in a.only:
            # First on a quiet machine; again after the telemetry scenarios, whose aftermath
            # (autovacuum and checkpoints over a million fresh rows) the second run shares.
            print("\n== commands: round trip over WebSocket and MQTT (bench/command_rtt.py)", flush=True)
            self.results["commands"] = self.commands()
            print(f"   {self.results['commands']}", flush=True)
        if "fleet" in a.only:
            print(f"\n== fleet: one command to {a.fleet} devices, against one request per device (bench/fleet.py)",
                  flush=True)
            self.results["fleet"] = self.fleet()
            print(f"   {self.results['fleet']}", flush=True)
        if "gateway" in a.only:
            self.results["scenarios"]["gateway"] = self.scenario("gateway", webs=1, bridges=1, naive=False,
                                                                 rates=rates)
        if "naive" in a.only and a.naive_rates:
            self.results["scenarios"]["naive"] = self.scenario("naive", webs=1, bridges=0, naive=True,
                                                               rates=[(r, 1) for r in a.naive_rates])
        if "scaleout" in a.only and a.scaleout:
            srates = [(max(a.rates), 1)] + ([(a.max_rate, 1)] if a.max_rate else [])
            self.results["scenarios"]["scaleout"] = self.scenario("scaleout", webs=2, bridges=2, naive=False,
                                                                  rates=srates)
        if "failover" in a.only and a.failover_rate:
            from bench import failover

            self.results["failover"] = failover.measure(self, rate=a.failover_rate, quick=a.quick)
        if "coap" in a.only:
            self.results["coap"] = self.coap()
        if "devtrans" in a.only:
            self.results["devtrans"] = self.devtrans()
        if "sockets" in a.only and a.sockets:
            # Every device once a second: each one-device socket gets an update a second (issue 17: 5,000 sockets).
            self.results["scenarios"]["sockets"] = self.scenario(
                "sockets", webs=1, bridges=1, naive=False, rates=[(float(a.devices), 1)], one_device_sockets=a.sockets)
        if "dialects" in a.only:
            from bench import dialects

            print("\n== dialects: the ingest pipeline, a mixed fleet (a quarter each on Tasmota, Shelly Gen2, ESPHome, "
                  "Zigbee2MQTT) against the plain dialect (bench/dialects.py)", flush=True)
            self.results["dialects"] = dialects.measure(devices=min(a.devices, 400),
                                                        messages=5000 if a.quick else 20000)
            print(f"   {self.results['dialects']}", flush=True)
        if "alarms" in a.only:
            from bench import alarms

            print("\n== alarms: the ingest pipeline with 1,000 threshold rules over the fleet against none "
                  "(bench/alarms.py)", flush=True)
            self.results["alarms"] = alarms.measure(devices=min(a.devices, 1000), messages=10000 if a.quick else 40000,
                                                    rounds=5)
            print(f"   {self.results['alarms']}", flush=True)
        if "overload" in a.only and a.overload_rate:
            # The sustainable rate first (memory and latency to compare with), then 3× it for minutes: memory must
            # stay bounded, nothing acked may be lost, and the backlog drains afterwards at a reported rate.
            base = a.overload_rate / 3
            self.results["scenarios"]["overload"] = self.scenario("overload", webs=1, bridges=1, naive=False, rates=[
                (base, a.batch_size),
                (a.overload_rate, a.batch_size, {"window": a.overload_seconds, "drain_timeout": 600.0})])
        if "soak" in a.only and a.soak_rate:
            # Half the sustainable rate for half an hour: each process's RSS every 10 s, its drift first to last tenth.
            self.results["scenarios"]["soak"] = self.scenario("soak", webs=1, bridges=1, naive=False, rates=[
                (a.soak_rate, 1, {"window": a.soak_seconds, "drain_timeout": 120.0, "series_every": 10.0})])
        if "notify" in a.only:
            self.results["notify"] = self.notify()
        if "commands" in a.only and telemetry:
            print("\n== commands again, after the telemetry scenarios", flush=True)
            self.results["commands_after_load"] = self.commands()
            print(f"   {self.results['commands_after_load']}", flush=True)
        if "history" in a.only:
            from bench import history

            print("\n== history: ingest with partitions and rollups against a plain table, bytes per sample "
                  "(bench/history.py)", flush=True)
            self.results["history"] = history.measure(database_url=a.database_url, quick=a.quick, env=self.env)
            print(f"   {self.results['history']}", flush=True)
        if "export" in a.only:
            from bench import export

            print("\n== export: synthetic history, 30-day aggregate, export memory, re-import (bench/export.py)",
                  flush=True)
            self.results["export"] = export.measure(database_url=a.database_url, quick=a.quick, env=self.env)
        if "sparkplug" in a.only:
            from bench import sparkplug

            print("\n== sparkplug: the Sparkplug B decoder against the JSON dialect, in process (bench/sparkplug.py)",
                  flush=True)
            self.results["sparkplug"] = sparkplug.measure(quick=a.quick)
            print(f"   {self.results['sparkplug']}", flush=True)
        self.results["ratios"] = ratios(self.results["scenarios"])
        return self.results

    def close(self) -> None:
        self.monitor.close()
        if self.broker:
            self.broker.stop()


def sample_size() -> int:
    from bench.load import message

    return len(message([int(time.time() * 1000)], 123456))


def ratios(scenarios: dict) -> dict:
    """Gateway vs naive at each rate both ran: throughput up, latency down."""
    g, n = scenarios.get("gateway"), scenarios.get("naive")
    if not g or not n:
        return {}
    out = {}
    by_rate = {p["offered_rate"]: p for p in g["phases"] if p.get("batch", 1) == 1}
    for p in n["phases"]:
        q = by_rate.get(p["offered_rate"])
        if not q:
            continue
        out[f"{p['offered_rate']:.0f}"] = {
            "stored_rate_x": _r(ratio(q["stored_rate_window"], p["stored_rate_window"])),
            "delivered_rate_x": _r(ratio(q["dashboards"]["delivered_rate_window_min"],
                                         p["dashboards"]["delivered_rate_window_min"])),
            "p50_latency_x": _r(ratio(p["latency_ms"]["p50"], q["latency_ms"]["p50"])),
            "p99_latency_x": _r(ratio(p["latency_ms"]["p99"], q["latency_ms"]["p99"])),
        }
    # Sustained: the best committed/s each reached in any phase, one sample per message on both sides.
    best_naive = max(p["stored_rate_window"] for p in n["phases"])
    best_single = max((p["stored_rate_window"] for p in g["phases"] if p.get("batch", 1) == 1), default=None)
    best_any = max(p["stored_rate_window"] for p in g["phases"])
    out["sustained"] = {"naive": best_naive, "gateway_1_per_msg": best_single, "gateway_any": best_any,
                        "x_1_per_msg": _r(ratio(best_single, best_naive)), "x_any": _r(ratio(best_any, best_naive))}
    return out


def _kind_range(kind: str) -> tuple[str, str]:
    """A scenario's device ids as a key range: the unique (device_id, ts) index serves it, LIKE would not."""
    return f"bench-{kind}-", f"bench-{kind}."


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def machine() -> dict:
    import psutil

    model = ""
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass

    def version(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=5).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "?"

    return {"cpus": os.cpu_count(), "cpu_model": model, "mem_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "kernel": platform.release(), "python": platform.python_version(),
            "mosquitto": version(["mosquitto", "-h"]), "redis": version(["redis-server", "--version"]),
            "postgres": version(["psql", "--version"]), "postgres_autovacuum": _setting("autovacuum"),
            "load_avg_at_start": [round(x, 2) for x in os.getloadavg()]}


def _setting(name: str) -> str:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute(f"SHOW {name}")
        return cur.fetchone()[0]


def main(argv: list[str] | None = None) -> int:
    from bench.report import print_table, write_outputs

    args = parse_args(argv)
    t0 = time.monotonic()
    bench = Bench(args)
    try:
        results = bench.run()
    finally:
        bench.close()
    results["elapsed_s"] = round(time.monotonic() - t0, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    write_outputs(results, out.parent)
    print_table(results)
    print(f"\nresults: {out}  plot: {out.parent / 'latency.png'}  ({results['elapsed_s']} s)")
    return 0
