"""The chaos run's stand-in for the Airflow scheduler, on the plant's clock (bench/chaos.py).

* `PlantClock` — the live plant's clock (MES `/api/v1/health`), extrapolated between readings.
* `Scheduler` — one thread per source system: each data interval `[t, t + period)` of the
  system's `schedule_cron` becomes due when the plant clock passes `t + period`; the thread then
  runs, for every entity, exactly what the DAG task runs for a scheduled run:
  `extract_scheduled(system, entity, t, t + period, run_id=...)`, with the DAGs' retries
  (2 retries, exponential backoff), at most 4 tasks at a time (the launcher's
  `AIRFLOW__CORE__PARALLELISM`). Like Airflow with `catchup=False`, a thread that finds several
  intervals due (the scheduler was down, or a run took long) runs only the latest one: the
  high-water marks must fill the gap. During the scheduler outage no run starts.
* `PgRestarter` — once, after the outage, waits for the historian's catch-up COPY to be under
  way and restarts the warehouse cluster (`pg_ctl stop -m fast`, start) under it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from croniter import croniter

log = logging.getLogger("chaos")

RETRIES = 2  # dag_factory.default_args
PARALLELISM = 4  # launcher: AIRFLOW__CORE__PARALLELISM


def parse_utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- the plant's clock ---------------------------------------------------------------------------

class PlantClock:
    """The plant's clock: read from the MES health endpoint, extrapolated at `speed` between
    readings (the server's clock is `start + speed × elapsed`, whole seconds)."""

    def __init__(self, health_url: str, speed: float) -> None:
        self.health_url = health_url
        self.speed = speed
        self._lock = threading.Lock()
        self._base: datetime | None = None
        self._mono = 0.0
        self.health()

    def health(self) -> dict:
        """The plant's health document (clock, drop progress, fault counts); re-syncs."""
        with urllib.request.urlopen(self.health_url, timeout=10) as response:
            doc = json.load(response)
        with self._lock:
            self._base = parse_utc(doc["clock"])
            self._mono = time.monotonic()
        return doc

    def now(self) -> datetime:
        with self._lock:
            return self._base + timedelta(seconds=(time.monotonic() - self._mono) * self.speed)

    def server_now(self) -> datetime:
        """The server's own clock now (never ahead of it, unlike `now`)."""
        for _ in range(50):
            try:
                return parse_utc(self.health()["clock"])
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("the plant's health endpoint does not answer")

    def wait_until(self, at: datetime, stop: threading.Event | None = None) -> bool:
        """Sleep until the server's clock has reached `at`; False if `stop` was set."""
        while True:
            ahead = (at - self.now()).total_seconds() / self.speed
            if ahead > 0.05:
                if stop is not None and stop.wait(min(ahead, 1.0)):
                    return False
                if stop is None:
                    time.sleep(min(ahead, 1.0))
                continue
            if self.server_now() >= at:
                return True
            time.sleep(0.05)


def latest_tick(cron: str, now: datetime) -> datetime:
    """The latest tick of `cron` at or before `now` (the end of the latest complete interval)."""
    return croniter(cron, now + timedelta(microseconds=1)).get_prev(datetime).astimezone(UTC)


def tick_before(cron: str, tick: datetime) -> datetime:
    return croniter(cron, tick).get_prev(datetime).astimezone(UTC)


def ticks_between(cron: str, after: datetime, upto: datetime) -> int:
    """Ticks t with after < t <= upto."""
    it, n = croniter(cron, after), 0
    while it.get_next(datetime).astimezone(UTC) <= upto:
        n += 1
    return n


# --- what happened -------------------------------------------------------------------------------

@dataclass
class Stats:
    """Counts of the driver's runs, shared by the threads (guarded by `lock`)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    rounds: Counter = field(default_factory=Counter)  # system → DAG runs started
    skipped: Counter = field(default_factory=Counter)  # system → intervals never run
    tasks: Counter = field(default_factory=Counter)  # system → tasks run
    failed_attempts: Counter = field(default_factory=Counter)  # system → attempts that failed
    retried_ok: Counter = field(default_factory=Counter)  # system → tasks that failed, then passed
    tasks_failed: Counter = field(default_factory=Counter)  # system → tasks failed after retries
    errors: Counter = field(default_factory=Counter)  # exception type → attempts
    last_interval: dict = field(default_factory=dict)  # system → (start, end) of its last run
    failures: list = field(default_factory=list)  # (system, entity, interval, error) final

    def add(self, counter: str, key, n: int = 1) -> None:
        with self.lock:
            getattr(self, counter)[key] += n


class Runner:
    """Runs one DAG task the way Airflow would: the call, retries after a backoff."""

    def __init__(self, stats: Stats, retry_wait_s: float, dsn: str | None = None) -> None:
        self.stats = stats
        self.retry_wait_s = retry_wait_s
        self.dsn = dsn  # the warehouse connection an extraction task resolves (the loader's)
        self.slots = threading.BoundedSemaphore(PARALLELISM)

    def task(self, system: str, entity: str, start: datetime, end: datetime, run_id: str,
             exact: bool = False) -> bool:
        from factory_platform.extract.run import extract_interval, extract_scheduled
        from factory_platform.extract.sql import close_idle_connections

        call = extract_interval if exact else extract_scheduled
        self.stats.add("tasks", system)
        for attempt in range(RETRIES + 1):
            try:
                with self.slots:
                    try:
                        call(system, entity, start, end, run_id=run_id, dsn=self.dsn)
                    finally:
                        # Airflow runs every task attempt in a process of its own: nothing it
                        # keeps (the SQL client's idle source connections) outlives it
                        close_idle_connections()
                if attempt:
                    self.stats.add("retried_ok", system)
                return True
            except Exception as exc:  # noqa: BLE001 — a failed task, as Airflow sees it
                reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                self.stats.add("failed_attempts", system)
                self.stats.add("errors", type(exc).__name__)
                log.warning("task %s.%s [%s, %s) %s attempt %d failed: %s", system, entity,
                            iso(start), iso(end), run_id, attempt + 1, reason)
                if attempt == RETRIES:
                    self.stats.add("tasks_failed", system)
                    with self.stats.lock:
                        self.stats.failures.append((system, entity, f"[{iso(start)}, {iso(end)})",
                                                    reason))
                    return False
                time.sleep(self.retry_wait_s * 2 ** attempt)
        return False

    def dag_run(self, system: str, start: datetime, end: datetime, run_id: str,
                exact: bool = False) -> None:
        """Every entity task of one run of `extract_<system>`, one after the other."""
        from factory_platform.sources import get_source

        self.stats.add("rounds", system)
        with self.stats.lock:
            self.stats.last_interval[system] = (start, end)
        for entity in get_source(system).entities:
            self.task(system, entity.name, start, end, run_id, exact)


class Scheduler(threading.Thread):
    """The scheduler of one `extract_<system>` DAG, on the plant clock."""

    def __init__(self, system: str, clock: PlantClock, runner: Runner,
                 outage: tuple[datetime, datetime], stop: threading.Event) -> None:
        super().__init__(name=f"sched-{system}", daemon=True)
        from factory_platform.sources import get_source

        self.system = system
        self.cron = get_source(system).schedule_cron
        self.clock = clock
        self.runner = runner
        self.outage = outage
        self.stop = stop
        self.last_end: datetime | None = None
        self.error: BaseException | None = None

    def in_outage(self, now: datetime) -> bool:
        return self.outage[0] <= now < self.outage[1]

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                now = self.clock.now()
                due = latest_tick(self.cron, now)
                if (self.last_end is None or due > self.last_end) and not self.in_outage(now):
                    if not self.clock.wait_until(due, self.stop):
                        return
                    start = tick_before(self.cron, due)
                    if self.last_end is not None and start > self.last_end:
                        self.runner.stats.add("skipped", self.system,
                                              ticks_between(self.cron, self.last_end, start))
                    self.runner.dag_run(self.system, start, due, f"scheduled__{iso(start)}")
                    self.last_end = due
                    continue
                nxt = croniter(self.cron, now).get_next(datetime).astimezone(UTC)
                wait = (nxt - now).total_seconds() / self.clock.speed
                self.stop.wait(min(max(wait, 0.05), 0.5))
        except BaseException as exc:
            self.error = exc
            log.exception("scheduler of %s died", self.system)


# --- the Postgres restart under a load -----------------------------------------------------------

@dataclass
class Restart:
    at_plant: datetime | None = None
    in_flight: str | None = None  # the statement that was running
    mid_load: bool = False
    down_s: float = 0.0
    error: str | None = None


class PgRestarter(threading.Thread):
    """After `after` (plant time), restart the cluster while a load is under way: first choice
    the historian's COPY (the catch-up of the outage's hours is the largest load of the run),
    else, after `patience` more plant time, any COPY of an extraction; after twice the patience,
    regardless."""

    BIG = "copy %tag_values__rows%"
    ANY = "copy %"

    def __init__(self, cluster, clock: PlantClock, after: datetime, patience: timedelta,
                 stop: threading.Event) -> None:
        super().__init__(name="pg-restart", daemon=True)
        self.cluster = cluster
        self.clock = clock
        self.after = after
        self.patience = patience
        self.stop = stop
        self.result = Restart()

    def run(self) -> None:
        import psycopg

        try:
            if not self.clock.wait_until(self.after, self.stop):
                return
            with psycopg.connect(self.cluster.dsn("postgres"), autocommit=True) as conn:
                while not self.stop.is_set():
                    late = self.clock.now() - self.after
                    pattern = self.BIG if late < self.patience else self.ANY
                    row = conn.execute(
                        "select query from pg_stat_activity where datname = 'warehouse' "
                        "and state = 'active' and pid <> pg_backend_pid() and query ilike %s "
                        "and query not ilike 'copy ops.%%' limit 1", (pattern,)).fetchone()
                    if row or late >= 2 * self.patience:
                        self.result.in_flight = row[0][:160] if row else None
                        self.result.mid_load = bool(row)
                        break
                    time.sleep(0.01)
            if self.stop.is_set():
                return
            self.result.at_plant = self.clock.now()
            began = time.monotonic()
            self.cluster.stop()
            self.cluster.start()
            self.cluster.wait_ready(60)
            self.result.down_s = time.monotonic() - began
            log.warning("PostgreSQL restarted at plant %s (down %.1f s) under: %s",
                        iso(self.result.at_plant), self.result.down_s, self.result.in_flight)
        except BaseException as exc:
            self.result.error = f"{type(exc).__name__}: {exc}"
            log.exception("the Postgres restart failed")
