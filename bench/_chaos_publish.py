"""The chaos run's transform and publishing (bench/chaos.py, issue #12): what `transform_dbt`
and `publish_erp` do, on the plant clock, while the ERP says no and a worker dies mid-publish —
then every duplicate effect counted on the ERP's own record.

* `Publisher` — a thread: every `every` plant-hours a *cycle*: the transform run (the load
  batches since the last successful run as its interval, `dbt build` without the gate's tests,
  the dbt and Great Expectations gate steps, `close_gate`, exactly as the DAG's tasks call them)
  then the posting task (`publish_to_erp`, then the B2MML documents) in a process of its own, as
  an Airflow worker runs it, with the DAG's retries. Some cycles kill that process:
  - `in_doubt`: once the ERP has taken a message of this attempt, the outbox is locked, so the
    worker's next answer cannot be recorded; it is killed (SIGKILL) while it waits — the ERP
    booked a message whose outbox row still says pending (the exactly-once promise's hardest
    case: the retry must send it again and the ERP must answer `duplicate`);
  - `random`: killed at a random moment of the attempt (planning, sending, writing B2MML).
* The ERP says no (`erp.inbound_faults`, the simulated ERP's control table): the first
  confirmations are rejected as "order not released yet", reversals as "posting period
  locked", goods movements as "ERP busy" (all TRANSIENT_*, a limited number of times); some
  cycles add a burst of "busy" for every message. The publisher's retry backoff is the
  platform's (5 minutes, doubling), scaled by the plant clock's speed like every other
  wait of the run.
* `duplicate_effects` — per message type and business key, the ERP's effective postings
  (accepted, not reversed by an accepted reversal) beyond one: a key booked twice. Must be 0.
  `settlement` compares the outbox, the ERP and the publish models after the last cycle.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

log = logging.getLogger("chaos")

HERE = Path(__file__).resolve().parent
PUBLISH_RETRIES = 2  # dag_factory.default_args, as for every task
WORKER_APP = "chaos_posting_worker"

# erp.inbound_faults rows installed before the first cycle:
# (reason_code, message_type, key_like, remaining, note)
TRANSIENT_FAULTS = (
    ("TRANSIENT_ORDER_NOT_RELEASED", "production_confirmation", "%:v1", 40,
     "order not released for confirmation yet (chaos)"),
    ("TRANSIENT_POSTING_PERIOD_LOCKED", None, "%:reversal%", 25,
     "posting period locked by the month-end run (chaos)"),
    ("TRANSIENT_ERP_BUSY", "goods_movement", None, 30, "ERP busy (chaos)"),
)
BURST = ("TRANSIENT_ERP_BUSY", None, None, 15, "ERP busy: every message (chaos burst)")
# the posting workers killed during production, in turn; a kill that met no message to send
# (the attempt ended first) is tried again in the next cycle
KILLS = ("in_doubt", "random", "in_doubt", "random", "in_doubt")
BURST_EVERY = 3  # every third cycle the ERP is busy for everything for a while


@dataclass
class Cycle:
    n: int
    run_id: str
    transform: str = ""  # passed, gate_failed, failed: <why>
    attempts: int = 0
    kill: str | None = None
    killed: str = ""  # what the kill met
    in_doubt: int = 0  # ERP-accepted messages whose outbox row was pending after the kill
    answers: Counter = field(default_factory=Counter)
    seconds: float = 0.0


class Publisher(threading.Thread):
    """transform_dbt and publish_erp on the plant clock (module docstring)."""

    def __init__(self, *, clock, start: datetime, every: timedelta, stop: threading.Event,
                 admin_dsn: str, erp_admin_dsn: str, outbound: Path, speed: float,
                 seed: int) -> None:
        super().__init__(name="publisher", daemon=True)
        self.clock = clock
        self.next_at = start + every
        self.every = every
        self.stop = stop
        self.admin_dsn = admin_dsn  # the harness's (superuser) view of the warehouse …
        self.erp_admin_dsn = erp_admin_dsn  # … and of the ERP
        self.outbound = outbound
        self.backoff_s = 300 / speed  # RETRY_BACKOFF (5 min) on the plant clock
        self.rng = random.Random(seed)
        self.cycles: list[Cycle] = []
        self.kills = list(KILLS)
        self.error: BaseException | None = None
        self.busy = threading.Lock()  # held while a cycle runs

    # --- the thread ------------------------------------------------------------------------

    def run(self) -> None:
        try:
            install_faults(self.erp_admin_dsn)
            while not self.stop.is_set():
                if not self.clock.wait_until(self.next_at, self.stop):
                    return
                c = self.cycle(kill=self.kills[0] if self.kills else None)
                if c.killed.startswith("killed"):
                    self.kills.pop(0)
                self.next_at = max(self.next_at + self.every, self.clock.now())
        except BaseException as exc:
            self.error = exc
            log.exception("the publisher died")

    def cycle(self, kill: str | None = None) -> Cycle:
        with self.busy:
            n = len(self.cycles) + 1
            c = Cycle(n, f"chaos_publish__{n:02d}", kill=kill)
            began = time.monotonic()
            if n % BURST_EVERY == 0:
                add_fault(self.erp_admin_dsn, *BURST)
            try:
                c.transform = transform(f"chaos_transform__{n:02d}")
            except Exception as exc:  # noqa: BLE001 — a failed task (the Postgres restart …)
                c.transform = f"failed: {type(exc).__name__}: {exc}"[:200]
            for attempt in range(PUBLISH_RETRIES + 1):
                c.attempts = attempt + 1
                try:
                    done = self.publish_attempt(c, kill if attempt == 0 else None)
                except Exception as exc:  # noqa: BLE001 — the harness lost its connection
                    log.warning("cycle %d: attempt %d: %s", n, c.attempts, exc)
                    done = False
                if done:
                    break
                time.sleep(1.0 * 2 ** attempt)
            c.seconds = time.monotonic() - began
            self.cycles.append(c)
            log.info("publish cycle %d: %s", n, c)
            return c

    def final_cycles(self, rounds: int) -> int:
        """After production: cycles without kills until no outbox row is pending (a transient
        rejection's backoff is waited out) or `rounds` ran; returns the rows still pending."""
        for _ in range(rounds):
            self.cycle(kill=None)
            left, wait_s = pending(self.admin_dsn)
            if not left:
                return 0
            time.sleep(min(max(wait_s, 0.5), 120))
        return pending(self.admin_dsn)[0]

    # --- one attempt of the posting task ----------------------------------------------------

    def publish_attempt(self, c: Cycle, kill: str | None) -> bool:
        """One attempt in a process of its own; True when it succeeded."""
        import psycopg

        # the worker's connections carry an application name: the harness finds the worker's
        # own lock wait by it
        env = dict(os.environ, PYTHONPATH=os.environ.get("PYTHONPATH", ""),
                   PGAPPNAME=WORKER_APP)
        with psycopg.connect(self.erp_admin_dsn, autocommit=True) as erp:
            before = erp.execute("select count(*) from erp.inbound_postings").fetchone()[0]
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "_chaos_publish.py"), c.run_id, str(self.outbound),
             f"{self.backoff_s:.3f}"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)
        try:
            if kill == "in_doubt":
                c.killed = self.kill_in_doubt(proc, before)
        finally:
            if kill == "in_doubt" and proc.poll() is None and not c.killed:
                proc.kill()  # the harness failed: a dead worker, as planned
        if kill == "random":
            delay = self.rng.uniform(1.0, 5.0)
            try:
                proc.wait(timeout=delay)
                c.killed = f"finished within {delay:.1f} s: not killed"
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                c.killed = f"killed after {delay:.1f} s"
        out, _ = proc.communicate()
        if kill and proc.returncode == -signal.SIGKILL:
            c.in_doubt += in_doubt(self.admin_dsn, self.erp_admin_dsn)
            log.warning("cycle %d: posting worker killed (%s), %d posting(s) in doubt",
                        c.n, c.killed, c.in_doubt)
            return False
        if proc.returncode != 0:
            log.warning("cycle %d: posting attempt failed:\n%s", c.n, out[-3000:])
            return False
        try:
            answers = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            answers = {}
        c.answers.update(answers)
        return True

    def kill_in_doubt(self, proc: subprocess.Popen, before: int) -> str:
        """Once the ERP holds a message of this attempt, lock the outbox (the worker's next
        answer cannot be recorded), wait until the worker waits for the lock, kill it."""
        import psycopg

        deadline = time.monotonic() + 600
        with psycopg.connect(self.erp_admin_dsn, autocommit=True) as erp:
            while proc.poll() is None and time.monotonic() < deadline:
                if erp.execute("select count(*) from erp.inbound_postings").fetchone()[0] > before:
                    break
                time.sleep(0.01)
        if proc.poll() is not None:
            return "finished before the ERP took a message: not killed"
        with psycopg.connect(self.admin_dsn) as conn:
            conn.execute("lock table ops.erp_outbox in share row exclusive mode")
            waited = time.monotonic()
            while proc.poll() is None and time.monotonic() - waited < 60:
                blocked = conn.execute(
                    "select count(*) from pg_stat_activity where datname = current_database() "
                    "and wait_event_type = 'Lock' and application_name = %s",
                    (WORKER_APP,)).fetchone()[0]
                if blocked:
                    break
                time.sleep(0.01)
            if proc.poll() is not None:
                conn.rollback()
                return "finished before it needed the outbox again: not killed"
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            conn.rollback()  # the lock goes: the dead worker's statement is rolled back
        return ("killed while it waited for the outbox, after the ERP took a message of this "
                "attempt (in doubt: the messages whose answer it was about to record)")


# --- the steps, as the DAG tasks call them --------------------------------------------------------

def transform(run_id: str) -> str:
    """One transform_dbt run: data_interval, the dbt models (tests included, gate tests
    excluded), dbt_gate_checks, gx_gate_checks, quality_gate — as the transformer."""
    from factory_platform.dbt_project import run_dbt
    from factory_platform.quality.checked import GateIncomplete, close_gate
    from factory_platform.quality.dbt_gate import run_dbt_gate
    from factory_platform.quality.gx_suites import QualityGateFailed, gx_quality_gate
    from factory_platform.transform_window import close_run, open_run
    from factory_platform.warehouse import warehouse_dsn

    dsn = warehouse_dsn()
    interval = open_run(dsn, run_id)
    done = run_dbt(dsn, "build", "--exclude", "tag:gate", "--vars", json.dumps(interval))
    if done.returncode != 0:
        tail = " ".join(done.stdout.strip().splitlines()[-3:])
        log.warning("transform %s: dbt build failed: %s", run_id, done.stdout[-3000:])
        return f"failed: dbt build ({tail[:160]})"
    steps = []
    try:
        run_dbt_gate(dsn, run_id)
    except Exception as exc:  # a crashed step: the gate stays closed
        log.exception("transform %s: the dbt gate step crashed", run_id)
        steps.append(f"dbt_gate crashed: {exc}"[:160])
    start = (datetime.fromisoformat(interval["interval_start"]) if interval["interval_start"]
             else datetime(2000, 1, 1, tzinfo=UTC))
    end = (datetime.fromisoformat(interval["interval_end"]) if interval["interval_end"]
           else datetime.now(UTC))
    try:
        gx_quality_gate(dsn, run_id, start, end)
    except QualityGateFailed:
        steps.append("gx: error scopes blocked")  # a recorded result, as in the DAG
    except Exception as exc:
        log.exception("transform %s: the GX gate step crashed", run_id)
        steps.append(f"gx_gate crashed: {exc}"[:160])
    try:
        close_gate(dsn, run_id)
    except GateIncomplete:
        return f"failed: gate closed ({'; '.join(steps)})"[:200]
    close_run(dsn, run_id)
    return "passed" + (f" ({'; '.join(steps)})" if steps else "")


def post(run_id: str, outbound: str, backoff_s: float) -> dict:
    """The posting task (`publish_erp.post_to_erp`) and the B2MML task, as the publisher and
    the ERP's inbound role; returns the ERP's answers counted."""
    from factory_platform.erp_publish import publish_to_erp, write_b2mml
    from factory_platform.warehouse import job_connection, warehouse_dsn

    dsn = warehouse_dsn(job_connection("warehouse", "publish_erp", "post_to_erp"))
    erp = warehouse_dsn(job_connection("erp_db", "publish_erp", "post_to_erp"))
    results = publish_to_erp(dsn, erp, run_id, retry_backoff=timedelta(seconds=backoff_s))
    write_b2mml(dsn, run_id, f"{outbound}/b2mml")
    answers = Counter()
    for r in results:
        answers.update(r.answers)
        answers["retrying"] += len(r.retrying)
        answers["held"] += len(r.held)
        answers["cancelled"] += r.cancelled
    return dict(answers)


# --- the ERP's control table, and what the harness reads ------------------------------------

def install_faults(erp_admin_dsn: str) -> None:
    for fault in TRANSIENT_FAULTS:
        add_fault(erp_admin_dsn, *fault)


def add_fault(erp_admin_dsn: str, code: str, message_type: str | None, key_like: str | None,
              remaining: int | None, note: str) -> None:
    import psycopg

    with psycopg.connect(erp_admin_dsn, autocommit=True) as conn:
        conn.execute("insert into erp.inbound_faults (reason_code, message_type, key_like, "
                     "remaining, note) values (%s, %s, %s, %s, %s)",
                     (code, message_type, key_like, remaining, note))


def fault_hits(erp_admin_dsn: str) -> list[tuple]:
    import psycopg

    with psycopg.connect(erp_admin_dsn) as conn:
        return conn.execute(
            "select reason_code, coalesce(message_type, 'any'), coalesce(key_like, 'any key'), "
            "sum(hits)::int from erp.inbound_faults group by 1, 2, 3 order by 1, 2").fetchall()


def pending(dsn: str) -> tuple[int, float]:
    """Outbox rows still pending and the seconds until the last of them is due."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        n, wait = conn.execute(
            "select count(*), coalesce(extract(epoch from max(next_attempt_at) - now()), 0) "
            "from ops.erp_outbox where state = 'pending'").fetchone()
    return n, float(wait)


def in_doubt(dsn: str, erp_dsn: str) -> int:
    """Messages the ERP holds whose outbox row still says pending."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        keys = [k for (k,) in conn.execute(
            "select idempotency_key from ops.erp_outbox where state = 'pending'")]
    if not keys:
        return 0
    with psycopg.connect(erp_dsn) as conn:
        return conn.execute("select count(*) from erp.inbound_postings "
                            "where idempotency_key = any(%s)", (keys,)).fetchone()[0]


# the business key of an idempotency key <type>:<business key>:v<n>[:reversal[-k]]
EFFECTIVE_ERP_SQL = r"""
with postings as (
    select message_type, idempotency_key, payload,
           regexp_replace(idempotency_key, '^[^:]+:(.*):v([0-9]+)$', '\1') as business_key,
           regexp_replace(idempotency_key, '^.*:v([0-9]+)$', '\1')::int as version
    from erp.inbound_postings p
    where status = 'accepted' and reversal_of is null
      and not exists (select 1 from erp.inbound_postings r
                      where r.status = 'accepted' and r.reversal_of = p.idempotency_key)
)
select message_type, business_key, version, payload from postings
"""


def duplicate_effects(erp_admin_dsn: str) -> tuple[int, list[str]]:
    """Effective ERP postings beyond one per message type and business key (and examples)."""
    import psycopg

    with psycopg.connect(erp_admin_dsn) as conn:
        rows = conn.execute(
            f"select message_type, business_key, count(*), array_agg(version order by version) "
            f"from ({EFFECTIVE_ERP_SQL}) e group by 1, 2 having count(*) > 1 order by 1, 2"
        ).fetchall()
    return (sum(n - 1 for _, _, n, _ in rows),
            [f"{t}:{k} effective versions {v}" for t, k, _, v in rows[:10]])


@dataclass
class Settlement:
    erp_effective: int = 0
    outbox_effective: int = 0
    outbox_vs_erp: int = 0  # keys whose effective version differs between outbox and ERP
    model_keys: int = 0  # publish rows in scopes the latest gate let through
    settled: int = 0  # … whose content the ERP effectively holds
    held: int = 0  # … held (a rejection, a blocked scope)
    unsettled: list[str] = field(default_factory=list)  # … neither
    b2mml_postings: int = 0
    b2mml_duplicates: int = 0
    b2mml_missing: int = 0


def settlement(dsn: str, erp_admin_dsn: str, outbound: Path) -> Settlement:
    """After the last cycle: the outbox's effective postings equal the ERP's; every publish
    row of a scope the latest passed gate let through is effectively in the ERP with its
    content, or held; every accepted confirmation posting is in exactly one B2MML document."""
    import psycopg
    from factory_platform.quality.checked import EFFECTIVE_POSTINGS_SQL, MESSAGE_MODELS

    s = Settlement()
    with psycopg.connect(erp_admin_dsn) as conn:
        erp = {(t, k): v for t, k, v, _ in conn.execute(EFFECTIVE_ERP_SQL)}
    s.erp_effective = len(erp)
    with psycopg.connect(dsn) as conn:
        outbox: dict[tuple, tuple[int, str]] = {}
        held = {(t, k) for t, k in conn.execute(
            "select message_type, business_key from ops.erp_hold where released_at is null")}
        for message_type, model in MESSAGE_MODELS.items():
            for key, version, content in conn.execute(
                    "select business_key, version, content_hash from ("
                    + EFFECTIVE_POSTINGS_SQL + ") e", {"type": message_type}):
                outbox[(message_type, key)] = (version, content)
            for key, content in conn.execute(
                    f"select m.business_key, m.content_hash from {model} m "
                    f"join dq.scope_status s on s.site_code = m.site_code "
                    f"and s.production_day = m.production_date "
                    f"where s.decision in ('passed', 'flagged')"):
                s.model_keys += 1
                if outbox.get((message_type, key), (0, None))[1] == content:
                    s.settled += 1
                elif (message_type, key) in held:
                    s.held += 1
                else:
                    s.unsettled.append(f"{message_type}:{key}")
        accepted = Counter(conn.execute(
            "select business_key, version from ops.erp_outbox where kind = 'posting' "
            "and state = 'accepted' and message_type = 'production_confirmation'").fetchall())
    s.outbox_effective = len(outbox)
    s.outbox_vs_erp = sum(1 for k in set(erp) | set(outbox)
                          if erp.get(k) != outbox.get(k, (None,))[0])
    documents = Counter(b2mml_postings(outbound / "b2mml"))
    s.b2mml_postings = sum(documents.values())
    s.b2mml_duplicates = sum(n - 1 for n in documents.values() if n > 1)
    s.b2mml_missing = len(set(accepted) - set(documents))
    return s


def b2mml_postings(out_dir: Path) -> list[tuple[str, int]]:
    """(confirmation key, posting version) of every SegmentResponse in every document."""
    from lxml import etree

    ns = {"b": "http://www.mesa.org/xml/B2MML"}
    found = []
    for document in sorted(out_dir.rglob("*.xml")):
        for segment in etree.parse(str(document)).iterfind(".//b:SegmentResponse", ns):
            version = segment.xpath(
                "b:SegmentData[b:ID='posting_version']/b:Value/b:ValueString", namespaces=ns)
            found.append((segment.findtext("b:ID", namespaces=ns), int(version[0].text)))
    return found


if __name__ == "__main__":  # one attempt of the posting task, in a process of its own
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    sys.path.insert(0, str(HERE.parent / "include"))
    print(json.dumps(post(sys.argv[1], sys.argv[2], float(sys.argv[3]))), flush=True)
