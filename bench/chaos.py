"""`make chaos` (issue #11): the live plant with every delivery fault switched on, a 6-plant-hour
scheduler outage and a PostgreSQL restart under a load, for 24 plant-hours; then nothing may be
lost — every record the plant emitted is found, by its identity, in raw, in quarantine or as a
byte-identical re-send.

Its own instance (var/chaos; PostgreSQL 127.0.0.1:55462, MES :18591, QMS :18592), started here
and stopped at the end (also on errors and Ctrl-C):

1. A fresh `warehouse`, `erp`, `eam`; a one-day world (the default plant, 3 lines × 40 machines
   so some API windows span several 500-record pages — a stuck cursor needs a follow-up page —
   WMS re-sends and cut-off EMS files at higher rates), seed fixed; `plant_sim up --clock live
   --speed S --faults var/chaos/faults.toml`: every delivery fault on for every system (files:
   written in place in chunks, 4 h late, re-delivered broken; APIs: stalls — the MES's longer
   than the client's 120 s request deadline —, empty answers, stuck cursors, cut-off JSON).
2. The history load `make run` triggers (every entity, `extract_interval` from 30 days before the
   world to now), then one scheduler thread per system on the plant clock (`_chaos_driver`):
   every due interval runs `extract_scheduled` for every entity, as the DAG task does, with the
   DAGs' 2 retries; several intervals due at once → only the latest (catchup=False).
3. Chaos beyond the plant's: no run starts in plant hours [8, 14) (the scheduler is down); after
   the outage, while the historian's catch-up COPY is under way, the cluster is restarted.
4. Drain: after the 24 plant-hours the schedulers go on until every planned delivery (late and
   broken ones included) has been made; then manual runs of every DAG (▶ in the UI: the latest
   complete interval, `extract_scheduled`) until no file waits in any inbox.
5. All along, every `--publish-every` plant-hours, the transform run and the ERP posting
   (`_chaos_publish`): the ERP rejects transiently (orders not released, a locked posting
   period, busy), some posting workers are killed (SIGKILL) — one after the ERP took a message
   and before its answer was recorded, one at a random moment — and retried as Airflow would;
   after the drain, more cycles until nothing is pending.
6. Reconciliation by identity (`_chaos_reconcile`), the tables; the ERP's effective postings
   per business key (`duplicate_effects`: a key booked twice) and the settlement of outbox,
   ERP, publish models and B2MML; `chaos_*` figures merged into bench/results.json (24-hour
   runs only). Exit 1 if any record is lost or any posting has a duplicate effect.

Usage: .venv/bin/python bench/chaos.py [--hours 24] [--speed 150] [--seed 11]
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "include"))
sys.path.insert(0, str(ROOT / "bench"))

from _chaos_driver import (
    PgRestarter,
    PlantClock,
    Runner,
    Scheduler,
    Stats,
    iso,
    latest_tick,
    parse_utc,
    tick_before,
)
from _chaos_publish import Publisher, duplicate_effects, fault_hits, settlement
from _cluster import start_provisioned_cluster
from _results import merge_results
from launcher.pgcluster import Cluster
from launcher.settings import (
    Instance,
    load_or_create_secrets,
    plant_passfile,
    platform_environment,
    role_dsn,
)

INSTANCE = Instance(name="chaos", pg_port=55462, api_port=18590, mes_port=18591, qms_port=18592)
BASE_CONFIG = ROOT / "include" / "plant_sim" / "configs" / "default.toml"
# The registry's systems whose interface the plant's delivery faults reach (databases, APIs,
# file drops); the shop-floor protocols have their own fault tests.
FAULTED_INTERFACES = ("sql", "rest", "csv_drop", "xml_drop")


def faulted_systems() -> tuple[str, ...]:
    from factory_platform.sources import all_sources

    return tuple(system for system, source in all_sources().items()
                 if source.interface in FAULTED_INTERFACES)


SYSTEMS = faulted_systems()
HISTORY_DAYS = 30  # launcher.MASTER_DATA_LEAD_DAYS: the history load starts this long before

# Every delivery fault on, for every system, at rates that hit each kind several times in a
# plant-day (PLM delivers one file a day: it gets every file fault). The MES stalls last longer
# than the REST client's request deadline (Source.request_deadline, 120 s), so the client must
# cut them; the QMS's are shorter (the client waits them out). Wall-clock seconds.
FAULTS_TOML = """\
# bench/chaos.py: every delivery fault on (plant_sim/faults.py)
[faults.wms]
partial_rate = 0.2
late_rate = 0.15
broken_rate = 0.15
late_hours = 4.0

[faults.scada]
partial_rate = 0.1
late_rate = 0.08
broken_rate = 0.08
late_hours = 4.0

[faults.ems]
partial_rate = 0.2
late_rate = 0.15
broken_rate = 0.15
late_hours = 4.0

[faults.plm]
partial_rate = 1.0
late_rate = 1.0
broken_rate = 1.0
late_hours = 4.0

[faults.mes]
stall_rate = 0.01
stall_max = 2
stall_seconds = 125.0
empty_rate = 0.02
empty_max = 6
stuck_cursor_rate = 1.0
stuck_cursor_max = 2
malformed_rate = 0.01
malformed_max = 6

[faults.qms]
stall_rate = 0.01
stall_max = 5
stall_seconds = 5.0
empty_rate = 0.02
empty_max = 6
stuck_cursor_rate = 0.1
stuck_cursor_max = 5
malformed_rate = 0.01
malformed_max = 6
"""

log = logging.getLogger("chaos")


def say(text: str) -> None:
    print(text, flush=True)


# --- set-up --------------------------------------------------------------------------------------

def start_cluster(secret: dict[str, str]) -> Cluster:
    return start_provisioned_cluster(INSTANCE, secret)


def world_config(path: Path, machines: int) -> None:
    """The default plant for one day, `machines` per line, more re-sends and cut-off files."""
    text = BASE_CONFIG.read_text(encoding="utf-8")
    text = re.sub(r"(?m)^days = \d+", "days = 1", text)
    text = re.sub(r"(?m)^machines = \d+", f"machines = {machines}", text)
    text = re.sub(r"(?m)^wms_duplicate_file = [0-9.]+", "wms_duplicate_file = 0.1", text)
    text = re.sub(r"(?m)^ems_malformed_file = [0-9.]+", "ems_malformed_file = 0.05", text)
    path.write_text(text, encoding="utf-8")


def plant_python_env() -> dict[str, str]:
    """The plant's environment: not the platform's connections (as the launcher starts it)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW__", "PG"))}
    return dict(env, PYTHONPATH=str(ROOT / "include"))


def start_plant(cluster: Cluster, secret: dict[str, str], config: Path, seed: int,
                speed: float, world: Path, inbox: Path, faults: Path) -> subprocess.Popen:
    """`plant_sim up` (load ERP/EAM/truth up to the clock's start, serve live) with its own
    roles (password file) and API key (PLANT_API_KEY); then, as the superuser, the loader may
    read the ERP and EAM tables (launcher.wait_for_plant)."""
    from factory_platform import roles
    from factory_platform.roles import apply_plant_privileges

    passfile = plant_passfile(INSTANCE, secret)
    log_file = open(INSTANCE.log_dir / "plant.log", "ab")  # noqa: SIM115 — the process's
    proc = subprocess.Popen(
        [sys.executable, "-m", "plant_sim", "up", "--config", str(config), "--seed", str(seed),
         "--out", str(world),
         "--truth-dsn", role_dsn(INSTANCE, roles.PLANT_TRUTH, "warehouse", passfile),
         "--erp-dsn", role_dsn(INSTANCE, roles.PLANT_ERP, "erp", passfile),
         "--eam-dsn", role_dsn(INSTANCE, roles.PLANT_EAM, "eam", passfile),
         "--clock", "live", "--speed", str(speed), "--inbox", str(inbox),
         "--faults", str(faults), "--host", "127.0.0.1",
         "--mes-port", str(INSTANCE.mes_port), "--qms-port", str(INSTANCE.qms_port)],
        env=dict(plant_python_env(), PLANT_API_KEY=secret["MES_API_KEY"]), stdout=log_file,
        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    (INSTANCE.var_dir / "plant.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + 180
    url = f"http://127.0.0.1:{INSTANCE.mes_port}/api/v1/health"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the simulated plant did not start; see "
                                   f"{INSTANCE.log_dir / 'plant.log'}") from None
            time.sleep(0.3)
    for system in ("erp", "eam"):
        apply_plant_privileges(cluster.dsn(system), system)
    return proc


def stop_plant(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def stop_stale_plant() -> None:
    """A plant left by a run that was killed hard (its pid file names it; only our command)."""
    pid_file = INSTANCE.var_dir / "plant.pid"
    if not pid_file.exists():
        return
    try:
        pid = int(pid_file.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except (ValueError, OSError):
        pid_file.unlink(missing_ok=True)
        return
    if b"plant_sim" in cmdline and str(INSTANCE.var_dir).encode() in cmdline:
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.1)
    pid_file.unlink(missing_ok=True)


def setup_logging() -> None:
    INSTANCE.log_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(INSTANCE.log_dir / "driver.log", mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(threadName)s %(levelname)s %(name)s: "
                                           "%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


# --- the plant's deliveries ----------------------------------------------------------------------

def planned_deliveries(world: Path, faults: Path, seed: int):
    """Every delivery the plant will make (plant_sim's own plan: normal, late, partial, broken)."""
    from plant_sim.drops import read_index
    from plant_sim.faults import load_spec, plan_deliveries

    return plan_deliveries(read_index(world), load_spec(faults), seed)


def delivered(inbox: Path) -> set[str]:
    ledger = inbox / ".plant_sim_dropped"
    return set(ledger.read_text(encoding="utf-8").split()) if ledger.exists() else set()


def waiting_files(inbox: Path) -> list[Path]:
    """Files waiting in the inboxes (not archived, not set aside, not hidden)."""
    out = []
    for system in ("wms", "scada", "ems", "plm"):
        folder = inbox / system
        if folder.is_dir():
            out += [p for p in folder.iterdir() if not p.name.startswith(".")
                    and not p.is_dir()]
    return out


def broken_blocked(key: str, inbox: Path) -> bool:
    """A broken re-delivery the plant holds back while its original waits in the inbox (it
    comes once a run has taken the original: the drain's manual runs see to it)."""
    if not key.endswith("#broken"):
        return False
    return (inbox / key.removesuffix("#broken")).exists()


def journal(inbox: Path) -> list[dict]:
    path = inbox / ".plant_sim_faults.csv"
    if not path.exists():
        return []
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


# --- the run -------------------------------------------------------------------------------------

class Chaos:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stop = threading.Event()
        self.stats = Stats()
        self.runner = Runner(self.stats, args.retry_wait)
        self.schedulers: list[Scheduler] = []
        self.restarter: PgRestarter | None = None
        self.publisher: Publisher | None = None
        self.still_pending = 0
        self.final_ends: dict[str, datetime] = {}
        self.manual_rounds = 0
        self.drain_note = ""

    def history_load(self, clock: PlantClock, world_start: datetime) -> None:
        """`make run`'s first step: a manual reload run of every extraction DAG over the
        plant's history (a failed task is triggered again, as an operator would)."""
        from factory_platform.sources import get_source

        now = clock.server_now()
        end = now.replace(minute=now.minute - now.minute % 15, second=0, microsecond=0)
        start = world_start - timedelta(days=HISTORY_DAYS)
        for system in SYSTEMS:
            for entity in get_source(system).entities:
                for _trigger in range(3):
                    if self.runner.task(system, entity.name, start, end, "manual__history",
                                        exact=True):
                        break
        say(f"history load [{iso(start)}, {iso(end)}) done")

    def progress(self, clock: PlantClock, t0: datetime, began: float, inbox: Path) -> str:
        s = self.stats
        with s.lock:
            runs, skipped = sum(s.rounds.values()), sum(s.skipped.values())
            failed, final = sum(s.failed_attempts.values()), sum(s.tasks_failed.values())
        faults = Counter(r["kind"] for r in journal(inbox))
        hours = (clock.now() - t0).total_seconds() / 3600
        short = " ".join(f"{k.split('_', 1)[1]} {v}" for k, v in sorted(faults.items()))
        return (f"plant {iso(clock.now())} (+{hours:4.1f} h) wall {time.monotonic() - began:5.0f} s"
                f" | DAG runs {runs} skipped {skipped} | attempts failed {failed}, tasks failed "
                f"{final} | faults: {short}")

    def manual_round(self, clock: PlantClock) -> None:
        """▶ on every extraction DAG: a manual run for the latest complete interval."""
        from factory_platform.sources import get_source

        now = clock.server_now()
        self.manual_rounds += 1
        threads = []
        for system in SYSTEMS:
            cron = get_source(system).schedule_cron
            end = latest_tick(cron, now)
            start = tick_before(cron, end)
            self.final_ends[system] = end
            t = threading.Thread(target=self.runner.dag_run, name=f"manual-{system}",
                                 args=(system, start, end, f"manual__{iso(now)}"), daemon=True)
            threads.append(t)
            t.start()
        for t in threads:
            t.join()

    def wait_settled(self, inbox: Path) -> None:
        """Until every file waiting in an inbox has been unchanged for the settle time."""
        from factory_platform.sources import get_source

        settle = max(get_source(s).settle_time.total_seconds() for s in SYSTEMS) + 2
        while True:
            files = waiting_files(inbox)
            ages = []
            for p in files:
                try:
                    ages.append(time.time() - p.stat().st_mtime)
                except FileNotFoundError:
                    continue
            if not ages or min(ages) >= settle:
                return
            time.sleep(max(0.5, settle - min(ages)))

    def run(self, cluster: Cluster, clock: PlantClock, world: Path, inbox: Path, faults: Path,
            t0: datetime, began: float) -> datetime:
        args = self.args
        end = t0 + timedelta(hours=args.hours)
        scale = min(1.0, args.hours / 24)
        outage = (t0 + timedelta(hours=args.outage_start * scale),
                  t0 + timedelta(hours=(args.outage_start + args.outage_hours) * scale))
        say(f"plant clock {iso(clock.now())}; production until {iso(end)}; scheduler outage "
            f"[{iso(outage[0])}, {iso(outage[1])}); PostgreSQL restart after it, under a load")
        self.history_load(clock, t0)
        for system in SYSTEMS:
            sched = Scheduler(system, clock, self.runner, outage, self.stop)
            self.schedulers.append(sched)
            sched.start()
        self.restarter = PgRestarter(cluster, clock, outage[1], timedelta(hours=2 * scale),
                                     self.stop)
        self.restarter.start()
        if args.publish_every > 0:
            self.publisher = Publisher(
                clock=clock, start=t0, every=timedelta(hours=args.publish_every * scale),
                stop=self.stop, admin_dsn=cluster.dsn("warehouse"),
                erp_admin_dsn=cluster.dsn("erp"), outbound=INSTANCE.var_dir / "outbound",
                speed=args.speed, seed=args.seed)
            self.publisher.start()

        plan = planned_deliveries(world, faults, args.seed)
        due_by = end + timedelta(hours=1)
        required = {d.key for d in plan if datetime.fromtimestamp(d.due, UTC) <= due_by}
        last_hour = None
        give_up = end + timedelta(hours=args.drain_max_hours)
        while True:  # production, then the first part of the drain: the schedulers run
            for sched in self.schedulers:
                if sched.error is not None:
                    raise RuntimeError(f"scheduler {sched.system} died: {sched.error!r}")
            if self.publisher is not None and self.publisher.error is not None:
                raise RuntimeError(f"the publisher died: {self.publisher.error!r}")
            now = clock.now()
            hour = now.replace(minute=0, second=0, microsecond=0)
            if hour != last_hour:
                last_hour = hour
                say(self.progress(clock, t0, began, inbox))
            if now >= due_by:
                health = clock.health()
                missing = {k for k in required - delivered(inbox)
                           if not broken_blocked(k, inbox)}
                if not missing and not health["drops"]["writing"]:
                    break
                if now >= give_up:
                    self.drain_note = (f"gave up waiting for {len(missing)} planned deliveries "
                                       f"at {iso(now)}: {sorted(missing)[:5]}")
                    say(self.drain_note)
                    break
            time.sleep(0.5)
        self.stop.set()
        say(f"every planned delivery made at plant {iso(clock.now())}; stopping the schedulers "
            "(runs under way finish)")
        for sched in self.schedulers:
            sched.join()
        if self.restarter is not None:
            self.restarter.join(timeout=120)
        # drain: manual runs until nothing waits in any inbox, every planned delivery was made
        # and a whole round passed (a task that failed leaves its gap to the next round's
        # high-water-mark catch-up, as the next scheduled run would)
        for n in range(1, self.args.max_manual_rounds + 1):
            self.wait_settled(inbox)
            with self.stats.lock:
                failed_before = sum(self.stats.tasks_failed.values())
            self.manual_round(clock)
            with self.stats.lock:
                failed = sum(self.stats.tasks_failed.values()) - failed_before
            time.sleep(2)  # a broken re-delivery follows once its original has left
            left, missing = waiting_files(inbox), required - delivered(inbox)
            say(f"manual round {n} at plant {iso(clock.now())}: {failed} task(s) failed, "
                f"{len(left)} file(s) waiting, {len(missing)} delivery(ies) to come")
            if not left and not missing and not failed:
                break
        left = waiting_files(inbox)
        if left:
            self.drain_note = (f"after {self.manual_rounds} manual rounds {len(left)} file(s) "
                               f"still wait: {', '.join(p.name for p in left[:5])}")
            say(self.drain_note)
        return clock.server_now()

    def settle_publishing(self) -> None:
        """After the plant stopped (nothing more is delivered): the publisher's cycle under way
        ends, then cycles until nothing waits for the ERP."""
        if self.publisher is None:
            return
        self.publisher.join()
        say(f"{len(self.publisher.cycles)} transform + publish cycles during production; now "
            f"cycles until nothing waits for the ERP")
        self.still_pending = self.publisher.final_cycles(self.args.final_publish_rounds)


# --- the report ----------------------------------------------------------------------------------

def publish_tables(chaos: Chaos, dsn: str, erp_admin_dsn: str) -> tuple[list[str], dict]:
    """The cycles, the ERP's rejections, the duplicate effects and the settlement."""
    pub = chaos.publisher
    lines = [(f"{'publish cycle':<14}{'transform':<34}{'attempts':>9}  {'kill':<9}{'in doubt':>9}"
             f"  ERP answers")]
    for c in pub.cycles:
        answers = ", ".join(f"{k} {v}" for k, v in sorted(c.answers.items()) if v)
        lines.append(f"{c.n:<14}{c.transform[:33]:<34}{c.attempts:>9}  {c.kill or '':<9}"
                     f"{c.in_doubt:>9}  {answers}")
    lines += [f"  cycle {c.n}: {c.killed}" for c in pub.cycles if c.kill]
    lines.append("ERP rejections on purpose (erp.inbound_faults): " + ", ".join(
        f"{code} [{mt} {like}] {hits}" for code, mt, like, hits in fault_hits(erp_admin_dsn)))
    duplicates, examples = duplicate_effects(erp_admin_dsn)
    s = settlement(dsn, erp_admin_dsn, INSTANCE.var_dir / "outbound")
    killed = [c for c in pub.cycles if c.kill and c.killed.startswith("killed")]
    lines += [
        (f"posting workers killed: {len(killed)} ({sum(c.in_doubt for c in killed)} ERP "
        f"posting(s) left in doubt: booked, the outbox still pending)"),
        f"DUPLICATE EFFECTS (ERP effective postings beyond one per business key): {duplicates}"
        + (f": {'; '.join(examples)}" if examples else ""),
        (f"effective postings: ERP {s.erp_effective}, outbox {s.outbox_effective}, differing "
        f"{s.outbox_vs_erp}"),
        f"publish rows in scopes the gate let through: {s.model_keys}; in the ERP as published "
        f"{s.settled}, held {s.held}, neither {len(s.unsettled)}"
        + (f" ({', '.join(s.unsettled[:5])})" if s.unsettled else "")
        + f"; outbox rows still pending {chaos.still_pending}",
        (f"B2MML: {s.b2mml_postings} confirmation postings in documents, {s.b2mml_duplicates} "
        f"twice, {s.b2mml_missing} accepted ones missing"),
    ]
    figures = {"duplicates": duplicates + s.b2mml_duplicates, "killed": len(killed),
               "in_doubt": sum(c.in_doubt for c in killed), "cycles": len(pub.cycles),
               "unsettled": len(s.unsettled),  # pending after the last cycle, not held
               "mismatched": s.outbox_vs_erp + s.b2mml_missing,
               "transient": sum(h for code, _, _, h in fault_hits(erp_admin_dsn)
                                if code.startswith("TRANSIENT"))}
    return lines, figures


def fault_table(inbox: Path, chaos: Chaos, outage_hours: float) -> tuple[list[str], int]:
    rows = journal(inbox)
    from factory_platform.sources import get_source

    # the plant's delivery journal lists the faults of its files and APIs (the databases' are
    # counted by the reconciliation)
    systems = tuple(s for s in SYSTEMS if get_source(s).interface != "sql")
    counts = Counter((r["kind"], r["system"]) for r in rows)
    kinds = sorted({k for k, _ in counts})
    lines = [f"{'fault injected':<30}" + "".join(f"{s:>7}" for s in systems) + f"{'total':>8}"]
    total = 0
    for kind in kinds:
        n = sum(counts[(kind, s)] for s in systems)
        total += n
        lines.append(f"{kind:<30}" + "".join(f"{counts[(kind, s)] or '':>7}" for s in systems)
                     + f"{n:>8}")
    skipped = sum(chaos.stats.skipped.values())
    lines.append(f"{'scheduler_outage':<30}{'':>42}{1:>8}   {outage_hours:g} plant-h; "
                 f"{skipped} scheduled intervals never run (outage, late runs)")
    r = chaos.restarter.result if chaos.restarter else None
    restarted = 1 if r and r.at_plant else 0
    what = ("not done" + (f": {r.error}" if r and r.error else "") if not restarted else
            f"at {iso(r.at_plant)}, down {r.down_s:.1f} s, "
            + (f"under `{r.in_flight[:60]}…`" if r.mid_load else "no load was running"))
    lines.append(f"{'pg_restart':<30}{'':>42}{restarted:>8}   {what}")
    return lines, total + 1 + restarted


def record_table(tallies) -> tuple[list[str], list[str], dict]:
    head = (f"{'':<30}{'emitted':>9}{'loaded':>9}{'quarant.':>9}{'dupl.':>7}{'not due':>8}"
            f"{'LOST':>6}{'raw rows':>10}")

    def row(label, items):
        return (f"{label:<30}{sum(t.emitted for t in items):>9}{sum(t.loaded for t in items):>9}"
                f"{sum(t.quarantined for t in items):>9}{sum(t.duplicates for t in items):>7}"
                f"{sum(t.not_due for t in items):>8}{sum(t.lost for t in items):>6}"
                f"{sum(t.raw_rows for t in items):>10}")

    per_entity = [head] + [row(f"{t.system}.{t.entity}", [t]) for t in tallies]
    by_system: dict[str, list] = {}
    for t in tallies:
        by_system.setdefault(t.system, []).append(t)
    summary = [head] + [row(s, ts) for s, ts in by_system.items()] + [row("all", tallies)]
    totals = {k: sum(getattr(t, k) for t in tallies)
              for k in ("emitted", "loaded", "quarantined", "duplicates", "not_due", "lost")}
    return per_entity, summary, totals


def ops_tables(dsn: str, stats: Stats, inbox: Path) -> list[str]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        incidents = conn.execute(
            "select kind, count(*), sum(times_seen), count(*) filter (where resolved_at is null) "
            "from ops.source_incident group by kind order by kind").fetchall()
        audit = conn.execute(
            "select status, count(*) from ops.load_audit group by status order by status"
        ).fetchall()
        # A change feed never shrinks: an answer with fewer versions than raw held for its
        # window deleted versions it did not bring back (only a later lookback restores them)
        shrunk = conn.execute(
            "select system, entity, window_start, interval_end, rows_loaded, rows_replaced "
            "from ops.load_audit where system in ('mes', 'qms') and status = 'loaded' "
            "and rows_replaced > rows_loaded order by finished_at").fetchall()
        waiting = conn.execute(
            "select system, subject from ops.source_incident where kind = 'file_waiting' "
            "and resolved_at is null").fetchall()
    stale = [(system, name) for system, name in waiting if not (inbox / system / name).exists()]
    lines = [f"{'source incident (ops)':<30}{'opened':>9}{'seen':>9}{'open now':>9}"]
    lines += [f"{k:<30}{n:>9}{seen:>9}{open_:>9}" for k, n, seen, open_ in incidents]
    s = stats
    lines.append(
        f"DAG runs {sum(s.rounds.values())} (intervals skipped {sum(s.skipped.values())}), "
        f"tasks {sum(s.tasks.values())}: attempts failed {sum(s.failed_attempts.values())}, "
        f"retried and passed {sum(s.retried_ok.values())}, failed after retries "
        f"{sum(s.tasks_failed.values())} (the next runs' high-water marks take over)")
    lines.append("attempt errors: " + ", ".join(f"{k} {v}" for k, v in s.errors.most_common()))
    lines.append("ops.load_audit batches: " + ", ".join(f"{st} {n}" for st, n in audit))
    lines.append(f"REST windows an answer shrank (rows_replaced > rows_loaded): {len(shrunk)}"
                 + "".join(f"; {sy}.{en} [{iso(a)}, {iso(b)}) {ld} loaded, {rp} replaced"
                           for sy, en, a, b, ld, rp in shrunk[:3]))
    lines.append(f"open file_waiting incidents whose file waits nowhere: {len(stale)}"
                 + (f" ({', '.join(n for _, n in stale[:3])}, …)" if stale else ""))
    with s.lock:
        failures = list(s.failures)
    if failures:
        lines.append(f"tasks failed after retries ({len(failures)}; first 12):")
        lines += [f"  {sy}.{en} {iv}: {why[:110]}" for sy, en, iv, why in failures[:12]]
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=float, default=24,
                    help="plant-hours of production (default 24: the whole one-day world)")
    ap.add_argument("--speed", type=float, default=150,
                    help="plant seconds per wall second (default 150: ~14 min wall)")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--machines", type=int, default=40, help="machines per line (default 40)")
    ap.add_argument("--outage-start", type=float, default=8,
                    help="scheduler outage start, plant-hours after the start (scaled for "
                         "--hours < 24)")
    ap.add_argument("--outage-hours", type=float, default=6)
    ap.add_argument("--retry-wait", type=float, default=3.0,
                    help="wall seconds before a failed task's first retry (doubles)")
    ap.add_argument("--max-manual-rounds", type=int, default=8,
                    help="drain: at most this many manual rounds of every DAG")
    ap.add_argument("--drain-max-hours", type=float, default=12,
                    help="plant-hours after production to wait for the planned deliveries")
    ap.add_argument("--publish-every", type=float, default=4,
                    help="plant-hours between transform + publish cycles (0: none; scaled for "
                         "--hours < 24)")
    ap.add_argument("--final-publish-rounds", type=int, default=6,
                    help="after the drain: at most this many cycles until nothing is pending")
    args = ap.parse_args()

    began = time.monotonic()

    def stop_on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    # SIGTERM (and SIGINT even where a shell ignores it) unwinds through the clean-up below
    signal.signal(signal.SIGTERM, stop_on_signal)
    signal.signal(signal.SIGINT, stop_on_signal)
    INSTANCE.var_dir.mkdir(parents=True, exist_ok=True)
    setup_logging()
    stop_stale_plant()
    secret = load_or_create_secrets(INSTANCE)
    # the components' connections (AIRFLOW_CONN_*), not the libpq variables: the harness is
    # the superuser by its password file (PGPASSWORD would override it), as in tests/conftest
    os.environ.update({k: v for k, v in platform_environment(INSTANCE, secret).items()
                       if not k.startswith("PG")})
    for name in ("PGPASSWORD", "PGUSER", "PGPASSFILE", "PGDATABASE", "PGHOST", "PGPORT"):
        os.environ.pop(name, None)
    world = INSTANCE.var_dir / "world"
    inbox = INSTANCE.plant_dir / "inbox"
    config = INSTANCE.var_dir / "plant.toml"
    faults = INSTANCE.var_dir / "faults.toml"
    shutil.rmtree(INSTANCE.plant_dir, ignore_errors=True)
    shutil.rmtree(INSTANCE.var_dir / "outbound", ignore_errors=True)
    inbox.mkdir(parents=True)
    world_config(config, args.machines)
    faults.write_text(FAULTS_TOML, encoding="utf-8")
    subprocess.run([sys.executable, "-m", "plant_sim", "generate", "--config", str(config),
                    "--seed", str(args.seed), "--out", str(world)], check=True,
                   env=plant_python_env(), stdout=subprocess.DEVNULL)
    INSTANCE.log_dir.mkdir(parents=True, exist_ok=True)

    cluster = plant = None
    chaos = Chaos(args)
    try:
        say(f"chaos: private PostgreSQL on 127.0.0.1:{INSTANCE.pg_port}, plant on "
            f":{INSTANCE.mes_port}/:{INSTANCE.qms_port}, speed {args.speed:g}× "
            f"(logs in {INSTANCE.log_dir})")
        cluster = start_cluster(secret)
        from factory_platform.warehouse import (
            ensure_warehouse_once,
            job_connection,
            warehouse_dsn,
        )

        # what an extract_<system> task resolves "warehouse" to: the loader's connection
        load_dsn = warehouse_dsn(job_connection("warehouse", "extract_mes", "load_work_orders"))
        setup_logging()  # again: importing Airflow replaced the root logger's handlers
        ensure_warehouse_once(load_dsn)  # once, before the threads share it
        chaos.runner.dsn = load_dsn
        plant = start_plant(cluster, secret, config, args.seed, args.speed, world, inbox,
                            faults)
        clock = PlantClock(f"http://127.0.0.1:{INSTANCE.mes_port}/api/v1/health", args.speed)
        t0 = parse_utc(json.loads((world / "world.json").read_text())["first_shift_start"])
        final_clock = chaos.run(cluster, clock, world, inbox, faults, t0, began)
        stop_plant(plant)
        plant = None
        chaos.settle_publishing()

        from _chaos_reconcile import reconcile

        say("reconciling by identity …")
        dsn = cluster.dsn("warehouse")  # the harness reads everything as the superuser
        tallies = reconcile(dsn, {"erp": cluster.dsn("erp"), "eam": cluster.dsn("eam")}, world,
                            inbox, chaos.final_ends)
        plant_hours = (final_clock - t0).total_seconds() / 3600
        fault_lines, injected = fault_table(inbox, chaos, args.outage_hours * min(1.0, args.hours / 24))
        per_entity, summary, totals = record_table(tallies)
        ops_lines = ops_tables(dsn, chaos.stats, inbox)
        publish_lines, published = ([], None) if chaos.publisher is None else publish_tables(
            chaos, dsn, cluster.dsn("erp"))
        wall = time.monotonic() - began
        report = [
            (f"chaos run: {plant_hours:.1f} plant-hours ({args.hours:g} of production + drain) "
            f"at {args.speed:g}×, seed {args.seed}, {wall:.0f} s wall"),
            "", *fault_lines, "", *per_entity, "", *summary, "", *ops_lines, "", *publish_lines,
        ]
        if chaos.drain_note:
            report += ["", chaos.drain_note]
        lost = [(t.system, t.entity, r) for t in tallies for r in t.lost_records]
        if lost:
            report += ["", (f"LOST records ({len(lost)}; first 30; all in "
                           f"{INSTANCE.var_dir / 'lost.txt'}):")]
            report += [f"  {s}.{e}: {r}" for s, e, r in lost[:30]]
        (INSTANCE.var_dir / "lost.txt").write_text(
            "".join(f"{s}.{e}\t{r}\n" for s, e, r in lost), encoding="utf-8")
        (INSTANCE.var_dir / "report.txt").write_text("\n".join(report) + "\n", encoding="utf-8")
        say("\n" + "\n".join(report))
        if args.hours >= 24:
            merge_results({
                "chaos_rows_lost": totals["lost"],
                "chaos_faults_injected": injected,
                "chaos_records_emitted": totals["emitted"],
                "chaos_plant_hours": round(plant_hours, 2),
                "chaos_wall_seconds": round(wall),
                **({} if published is None else {
                    "chaos_duplicate_postings": published["duplicates"],
                    "chaos_publish_workers_killed": published["killed"],
                    "chaos_postings_in_doubt": published["in_doubt"],
                    "chaos_erp_transient_rejections": published["transient"],
                    "chaos_publish_unsettled": published["unsettled"],
                    "chaos_publish_mismatched": published["mismatched"],
                }),
            })
        else:
            say("(a short run: not merged into bench/results.json)")
        failed = []
        if totals["lost"]:
            failed.append(f"{totals['lost']} records lost")
        if published is not None and published["duplicates"]:
            failed.append(f"{published['duplicates']} duplicate ERP effects")
        if published is not None and published["mismatched"]:
            failed.append(f"{published['mismatched']} postings where outbox, ERP and B2MML "
                          f"disagree")
        if failed:
            say(f"\nFAIL: {'; '.join(failed)}")
            return 1
        say("\nOK: nothing lost" + ("" if published is None else ", nothing posted twice"))
        return 0
    except KeyboardInterrupt:
        say("\ninterrupted: stopping the plant and the cluster")
        return 130
    finally:
        chaos.stop.set()
        stop_plant(plant)
        stop_stale_plant()  # one still starting when we were interrupted
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    raise SystemExit(main())
