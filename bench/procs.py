"""CPU and peak RSS of each process in the benchmark, over measurement windows (psutil)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psutil


def _find(name: str) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["name"]) if p.info["name"] == name]


class Monitor:
    """Samples RSS every `interval` s; CPU is the difference of cpu_times over a window."""

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self._roles: dict[str, Callable[[], list[psutil.Process]]] = {}
        self._cache: dict[int, psutil.Process] = {}
        self._lock = threading.Lock()
        self._window: dict | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def add(self, role: str, pids: list[int]) -> None:
        """Track these processes (and their children) under one role name."""
        procs = []
        for pid in pids:
            try:
                procs.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                pass
        self._roles[role] = lambda: [q for p in procs if p.is_running() for q in [p, *_children(p)]]

    def add_named(self, role: str, name: str) -> None:
        """Track every process with this executable name (shared services: Redis, PostgreSQL)."""
        self._roles[role] = lambda: _find(name)

    def remove(self, role: str) -> None:
        self._roles.pop(role, None)

    def _measure(self) -> dict[str, tuple[dict[int, float], float]]:
        """Per role: CPU seconds by pid (processes come and go: PostgreSQL backends), and total RSS."""
        out = {}
        for role, get in list(self._roles.items()):
            cpu: dict[int, float] = {}
            rss = 0.0
            for p in get():
                try:
                    t = p.cpu_times()
                    cpu[p.pid] = t.user + t.system
                    rss += p.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            out[role] = (cpu, rss)
        return out

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            sample = self._measure()
            with self._lock:
                if self._window is not None:
                    peaks = self._window["peak"]
                    for role, (_, rss) in sample.items():
                        peaks[role] = max(peaks.get(role, 0.0), rss)
                    series = self._window["series"]
                    now = time.monotonic()
                    if series is not None and now >= self._window["next_point"]:
                        self._window["next_point"] = now + self._window["every"]
                        offset = round(now - self._window["t"], 1)
                        for role, (_, rss) in sample.items():
                            series.setdefault(role, []).append((offset, round(rss / 2**20, 1)))

    def start(self, *, series_every: float | None = None) -> None:
        """Open a window; with `series_every`, also record each role's RSS every that many seconds (a soak)."""
        with self._lock:
            self._window = {"t": time.monotonic(), "cpu": {r: c for r, (c, _) in self._measure().items()}, "peak": {},
                            "series": {} if series_every else None, "every": series_every or 0.0,
                            "next_point": time.monotonic()}

    def end(self) -> dict[str, dict[str, float]]:
        """Close the window: per role, CPU as % of one core and peak RSS in MiB."""
        now = self._measure()
        with self._lock:
            window, self._window = self._window, None
        assert window is not None
        wall = time.monotonic() - window["t"]
        out = {}
        for role, (cpu, rss) in now.items():
            if role not in window["cpu"]:
                continue
            peak = max(window["peak"].get(role, 0.0), rss)
            # A process that started inside the window counts whole; one that ended inside it is missed.
            before = window["cpu"][role]
            used = sum(t - before.get(pid, 0.0) for pid, t in cpu.items())
            out[role] = {"cpu_pct": round(100 * used / wall, 1),
                         "rss_peak_mib": round(peak / 2**20, 1)}
            points = (window["series"] or {}).get(role)
            if points:
                out[role]["rss_series_mib"] = points
                out[role]["rss_drift_pct"] = rss_drift_pct([mib for _, mib in points])
        return out

    def close(self) -> None:
        self._stop.set()


def _children(p: psutil.Process) -> list[psutil.Process]:
    try:
        return p.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def rss_drift_pct(points: list[float]) -> float | None:
    """How much the last tenth of a soak's RSS samples is above (or below) its first tenth, in % of the first.

    Means of tenths, not single samples: a process's RSS moves with each batch and each garbage collection,
    and what a soak looks for is the level creeping up, not the noise around it.
    """
    if len(points) < 10:
        return None
    tenth = len(points) // 10
    first, last = sum(points[:tenth]) / tenth, sum(points[-tenth:]) / tenth
    return round(100 * (last - first) / first, 1) if first else None
