"""The failover scenario: two web, two bridges, Redis behind Sentinel; one of each and the master killed under load.

Publishers offer a steady rate the whole time. One bridge is SIGKILLed and restarted with its
client id (its persistent session holds its share meanwhile), then one web process (its
dashboards reconnect to the other, as through Caddy), then the Redis master (the sentinels
promote the replica; the old master comes back as a replica). Then the load stops and drains.
What is counted: acked against stored (distinct (device, ts)), duplicates, and per kill the
committed rate's gap and recovery, when dashboards got live samples again and what they missed.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from bench import failover_counts as fc
from bench.load import LoadPlan, run_load
from bench.stack import BenchStack, SentinelRedis
from testing.processes import PrivateService, Process
from testing.waiting import wait_until

if TYPE_CHECKING:
    from bench.runner import Bench

MARGIN_S = 1.0  # a kill's counting window opens this long before it
# On a busy machine a restart can take 10 s: the next kill waits until the restarted process has been back this
# long, so that one kill's aftermath (a bridge pushing its backlog) is not counted against the next.
SETTLE_S = 4.0
QUEUED_S = 2.0  # a sample received this much after its publication waited in a session, not in a live stream


@dataclass(frozen=True)
class Timeline:
    """When (seconds into the load) each kill happens, how long the killed process stays down, and the total."""

    first: float
    spacing: float
    tail: float
    down: float

    @classmethod
    def for_mode(cls, *, quick: bool) -> Timeline:
        return cls(first=6.0, spacing=12.0, tail=14.0, down=3.0) if quick else cls(
            first=15.0, spacing=40.0, tail=45.0, down=10.0)

    @property
    def duration(self) -> float:
        return self.first + 2 * self.spacing + self.tail

    def kills(self) -> list[tuple[str, float]]:
        return [(target, self.first + i * self.spacing) for i, target in enumerate(("bridge", "web", "redis"))]


class Failover:
    """One run of the scenario; `run()` returns its figures (JSON-ready)."""

    def __init__(self, *, bench: Bench, rate: float, quick: bool) -> None:
        self.bench = bench
        self.rate = rate
        self.timeline = Timeline.for_mode(quick=quick)
        self.marks: list[dict] = []  # what happened when (epoch s), in order
        self.t0 = 0.0  # when the load starts (epoch s)
        self.killed_master: PrivateService | None = None
        self._procs: dict[str, Any] = {}

    def _mark(self, what: str, at: float | None = None, **more: object) -> dict:
        """Note an event; a kill is noted at the moment before the signal (sockets close before kill() returns)."""
        when = time.time() if at is None else at
        entry = {"what": what, "at": when, **more}
        self.marks.append(entry)
        print(f"   {when - self.t0:6.1f} s  {what} {more or ''}", flush=True)
        return entry

    def run(self) -> dict:
        from bench.dashboards import Dashboards, slices

        b, a = self.bench, self.bench.args
        redis_dir = b.logdir / "failover-redis"
        sentinel = SentinelRedis(redis_dir)
        env = dict(b.env, REDIS_URL=sentinel.url, MQTT_SHARE_GROUP=f"benchf{b.run_id}",
                   **dict(kv.split("=", 1) for kv in a.gateway_env))
        stack = BenchStack(env, b.logdir, "failover")
        dashes = None
        try:
            webs = [stack.start_web(), stack.start_web()]
            ids = [f"bench-{b.run_id}-failover-{i + 1}" for i in range(2)]
            bridges = [stack.start_bridge(client_id) for client_id in ids]
            fleet = list(b.devices("f"))
            views = [fleet] * a.dashboards + (slices(fleet, a.slice_dashboards) if a.slice_dashboards else [])
            dashes = Dashboards(stack.ws_urls, b.token, views, a.dashboard_procs, reconnect=True)
            dashes.wait_ready(timeout=70.0)
            load, range_ms = self._load(stack, sentinel, webs, bridges, ids)
            stored, drained_s = self._drain(load["acked"])
            seen = dashes.stop()
            events = dashes.events
            dashes = None
            heartbeats = self._heartbeats(ids)
        finally:
            if dashes is not None:
                for proc in dashes.procs:
                    proc.kill()
            stack.stop()
            sentinel.stop()
        return self._figures(load, stored, drained_s, views, seen, events, heartbeats, sentinel, range_ms)

    def _load(self, stack: BenchStack, sentinel: SentinelRedis, webs: list[Process], bridges: list[Process],
              ids: list[str]) -> tuple[dict, tuple[int, int]]:
        """Offer the load for the timeline's duration, killing and restarting on schedule meanwhile."""
        b, a, tl = self.bench, self.bench.args, self.timeline
        host, port = b.mqtt_url.split("://", 1)[1].rsplit(":", 1)
        plan = LoadPlan(host=host, port=int(port), devices=b.devices("f"), rate=self.rate, duration=tl.duration,
                        workers=a.publishers, client=a.load_client)
        holder: dict = {}
        lead = 1.5
        self.t0 = time.time() + lead
        thread = threading.Thread(target=lambda: holder.update(run_load(plan, lead=lead)), daemon=True)
        thread.start()
        self._procs = {"stack": stack, "sentinel": sentinel, "webs": webs, "bridges": bridges, "ids": ids,
                       "web_port": stack.web_ports[0]}
        settled = 0.0  # a kill waits until the last restarted process has been back SETTLE_S
        for target, at in tl.kills():
            due = max(self.t0 + at, settled)
            if due > self.t0 + tl.duration - tl.down - 5:  # restarts so slow that the load would end first
                self._mark(f"{target} not killed: too late in the load")
                continue
            time.sleep(max(0.0, due - time.time()))
            killed = self._kill(target)
            time.sleep(max(0.0, killed + tl.down - time.time()))
            self._restart(target)
            settled = time.time() + SETTLE_S
        thread.join(tl.duration + 120)
        self._mark("load stopped")
        return holder, (holder["first_ms"], holder["last_ms"])

    def _kill(self, target: str) -> float:
        """SIGKILL one process of `target`'s kind; returns when (epoch s), noted just before the signal."""
        procs = self._procs
        now = time.time()
        if target == "bridge":
            procs["bridges"][0].kill(signal.SIGKILL)
            self._mark("bridge killed", now, client_id=procs["ids"][0])
        elif target == "web":
            procs["webs"][0].kill(signal.SIGKILL)
            self._mark("web killed", now, port=procs["web_port"])
        else:
            sentinel = procs["sentinel"]
            self.killed_master = old = sentinel.current_master()
            now = time.time()
            old.kill()
            self._mark("redis master killed", now, port=old.port)
            wait_until(partial(_promoted, sentinel, old.port), timeout=60, interval=0.1,
                       what="the sentinels promoted the replica")
            self._mark("replica promoted", port=sentinel.master_port())
        return now

    def _restart(self, target: str) -> None:
        """Start the killed process again as it was: the bridge with its client id, the web on its port."""
        procs = self._procs
        if target == "bridge":
            self._mark("bridge restarting")
            procs["stack"].start_bridge(procs["ids"][0])
            self._mark("bridge connected", client_id=procs["ids"][0])
        elif target == "web":
            self._mark("web restarting")
            procs["stack"].start_web(port=procs["web_port"])
            self._mark("web ready", port=procs["web_port"])
        elif self.killed_master is not None:
            self.killed_master.start()
            self._mark("old master restarted (becomes a replica)", port=self.killed_master.port)

    def _drain(self, acked: int, timeout: float = 60.0) -> tuple[int, float]:
        """Wait until everything acked is stored, or the count stops moving for 5 s."""
        t0 = time.monotonic()
        last, since = -1, t0
        while True:
            n = self.bench.totals("f")[1]
            if n >= acked or time.monotonic() - since > 5 or time.monotonic() - t0 > timeout:
                return n, time.monotonic() - t0
            if n != last:
                last, since = n, time.monotonic()
            time.sleep(0.25)

    def _heartbeats(self, ids: list[str]) -> dict:
        from devices.models import BridgeHeartbeat

        return {h.client_id: h.counters for h in BridgeHeartbeat.objects.filter(client_id__in=ids)}

    def _rows(self) -> list[tuple[str, float, float]]:
        """(device, publish time ms, bridge receive time s) of every stored sample of the scenario."""
        from django.db import connection

        from bench.runner import _kind_range

        with connection.cursor() as cur:
            cur.execute("SELECT device_id, (data->>'t')::float8, extract(epoch FROM received_at)::float8 "
                        "FROM devices_telemetry WHERE device_id >= %s AND device_id < %s", list(_kind_range("f")))
            return list(cur.fetchall())

    def _figures(self, load: dict, stored: int, drained_s: float, views: list[list[str]], seen: list,
                 events: list, heartbeats: dict, sentinel: SentinelRedis, range_ms: tuple[int, int]) -> dict:
        b, tl = self.bench, self.timeline
        rows_total, distinct = b.totals("f")
        rows = self._rows()
        kills = [m for m in self.marks if m["what"].endswith("killed")]
        end = self.t0 + tl.duration
        received = [r[2] for r in rows]
        steady_counts = fc.buckets(received, self.t0 + 2, kills[0]["at"])
        steady = sorted(steady_counts)[len(steady_counts) // 2] / fc.STEP_S if steady_counts else self.rate
        # A kill's window opens a second before it: what was in flight when it struck belongs to it.
        bounds = [self.t0, *(k["at"] - MARGIN_S for k in kills), end + 5]
        bounds_ms = [x * 1000 for x in bounds]
        by_device: dict[str, list[float]] = {}
        for device, t, _ in rows:
            by_device.setdefault(device, []).append(t)
        per_device = {d: fc.per_window(sorted(ts), bounds_ms) for d, ts in by_device.items()}
        zero = [0] * (len(bounds) - 1)
        expected = [[sum(per_device.get(d, zero)[w] for d in view) for w in range(len(zero))] for view in views]
        got = [fc.per_window(sorted(sent), bounds_ms) for sent, _ in seen]
        windows = fc.missed_items(expected, got)
        full = b.args.dashboards
        per_kill = []
        for i, kill in enumerate(kills):
            until = min(bounds[i + 2] + MARGIN_S, end)
            counts = fc.buckets(received, kill["at"], until)
            k_ms = kill["at"] * 1000
            resumed = [fc.resumed_after_s(sent, lat, k_ms) for sent, lat in seen]
            drops = [o for ev in events for o in fc.outages(ev) if bounds[i + 1] * 1000 <= o[0] < until * 1000]
            per_kill.append({
                "killed": kill["what"].removesuffix(" killed"), "at_s": round(kill["at"] - self.t0, 2),
                "commit_gap_s": fc.longest_empty_s(counts), "commit_below_90pct_s": fc.below_s(counts, steady),
                "commit_recovered_after_s": fc.recovered_after_s(counts, steady),
                "commit_min_per_s": round(min(counts, default=0) / fc.STEP_S),
                "dashboards_resumed_after_s": fc.spread(resumed),
                "full_dashboards_resumed_after_s": fc.spread(resumed[:full]),
                "dashboards_reconnected": len(drops),
                "reconnect_s": fc.spread([None if up is None else round((up - down) / 1000, 3)
                                          for down, up in drops]) if drops else None,
                "missed": windows[i + 1],
                **self._kill_extras(kill, rows, heartbeats),
            })
        return {
            "offered_rate": self.rate, "duration_s": tl.duration, "down_s": tl.down, "devices": len(b.devices("f")),
            "dashboards": len(views), "full_dashboards": full, "sentinels": len(sentinel.sentinels),
            "down_after_ms": sentinel.down_after_ms, "sent": load["sent"], "acked": load["acked"],
            "stored_distinct": distinct, "rows": rows_total, "lost": load["acked"] - distinct,
            "duplicates": rows_total - distinct, "stored_in_range": stored, "drain_s": round(drained_s, 2),
            "steady_committed_per_s": steady, "marks": [dict(m, at_s=round(m["at"] - self.t0, 2)) for m in self.marks],
            "kills": per_kill, "before_first_kill": windows[0], "range_ms": list(range_ms),
            "bridge_counters": {cid: {k: v for k, v in c.items() if k in ("received", "samples_stored")}
                                for cid, c in heartbeats.items()},
            "load_avg_1m": round(os.getloadavg()[0], 2),
        }

    def _kill_extras(self, kill: dict, rows: list[tuple[str, float, float]], heartbeats: dict) -> dict:
        """For the bridge: what its session held while it was down, and what it had in flight unacked."""
        if kill["what"] != "bridge killed":
            if kill["what"] == "redis master killed":
                promoted = next(m for m in self.marks if m["what"] == "replica promoted")
                return {"promoted_after_s": round(promoted["at"] - kill["at"], 2)}
            return {}
        back = next(m for m in self.marks if m["what"] == "bridge connected")
        k_ms = kill["at"] * 1000
        restarting = next(m for m in self.marks if m["what"] == "bridge restarting")["at"]
        late = [(t, r) for _, t, r in rows if r >= restarting]
        counters = heartbeats.get(kill["client_id"], {})
        return {
            # The restarted process's counters: messages it received that were stored already (committed, not acked).
            "redelivered_already_stored": counters.get("received", 0) - counters.get("samples_stored", 0),
            "restarted_after_s": round(back["at"] - kill["at"], 2),
            # Published before the kill, received only after the restart: in flight unacked at the kill, redelivered.
            "redelivered_in_flight": sum(1 for t, r in late if t < k_ms),
            # Published after the kill, received after the restart over QUEUED_S late (the other bridge takes its
            # share live, in well under a second): the killed bridge's share, queued in its session meanwhile.
            "queued_in_session": sum(1 for t, r in late if t >= k_ms and r - t / 1000 > QUEUED_S),
            # How long the oldest of them waited: publish to the restarted bridge's receive.
            "queued_waited_s_max": round(max((r - t / 1000 for t, r in late), default=0), 2),
        }


def _promoted(sentinel: SentinelRedis, old_port: int) -> bool:
    return sentinel.master_port() not in (None, old_port)


def measure(bench: Bench, *, rate: float, quick: bool) -> dict:
    """Run the scenario on the bench's broker, database and registry (devices bench-f-*)."""
    print(f"\n== failover: 2 web, 2 bridges (one share group), Redis master + replica + 3 sentinels; "
          f"{rate:.0f} samples/s; bridge, web, then the Redis master SIGKILLed under load", flush=True)
    bench.vacuum()
    result = Failover(bench=bench, rate=rate, quick=quick).run()
    print(summary(result), flush=True)
    return result


def summary(r: dict) -> str:
    """A few lines for the console."""
    lines = [f"   acked {r['acked']:,} stored {r['stored_distinct']:,} lost {r['lost']:,} "
             f"duplicates {r['duplicates']:,}"]
    for k in r["kills"]:
        lines.append(f"   {k['killed']}: commits gap {k['commit_gap_s']} s, back after "
                     f"{k['commit_recovered_after_s']} s; dashboards resumed after {k['dashboards_resumed_after_s']}, "
                     f"missed {k['missed']['missing']:,} of {k['missed']['expected']:,}")
    return "\n".join(lines)

