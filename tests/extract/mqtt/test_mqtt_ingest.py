"""The MQTT durable subscriber against the plant (#16): one shift of machine events published
live by the simulated plant into a private mosquitto, landed by the ingest process
(`python -m factory_platform.extract.mqtt_ingest`) while the broker restarts (planned in the
truth) and the ingest is killed with SIGKILL mid-stream and started again.

Checked against the plant: the message ids in raw are exactly the ones it published (its
`published` count on the MES `/api/v1/health` minus its listed duplicate publishes), each once;
counts per machine × counter and state changes per machine in the shift, through the staging
models, equal the truth's and the MES's; malformed and hostile messages (not JSON, empty, no id,
a bad time, an id too long for raw's key, a string PostgreSQL cannot hold, a payload over the
limit, an id reused for another payload) are quarantined once with topic and reason while the
stream goes on; no secret reaches the ingest's log; extract_mqtt's task reports the ingest
alive, fails once it is not, when the broker refuses its login (with the broker's reason) and
when no ingest ever reported, while a reload only reports what raw holds."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from launcher import settings as launcher_settings
from launcher.settings import load_or_create_secrets

PROJECT_ROOT = Path(__file__).resolve().parents[3]
INSTANCE = launcher_settings.test_instance()
RUNTIME_MES_PORT = int(os.environ.get("SFDP_TEST_MQTT_MES_PORT", INSTANCE.mqtt_port + 1))
SPEED = 4800.0  # a shift (8 plant hours) in 6 s
UTC = dt.UTC


def _ms(text: str) -> int:
    return round(dt.datetime.fromisoformat(text).timestamp() * 1000)


def _truth(world: Path, table: str) -> list[dict[str, str]]:
    with open(world / "truth" / f"{table}.csv", encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def _wait(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def _count(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("select count(*) from raw_mqtt.messages").fetchone()[0]


class IngestProcess:
    """The ingest as the launcher starts it: its own process, the environment's connections."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        from launcher.__main__ import mqtt_ingest_environment

        env = {**mqtt_ingest_environment(dict(os.environ)),
               "PYTHONPATH": str(PROJECT_ROOT / "include")}
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "factory_platform.extract.mqtt_ingest"], env=env,
                stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def kill(self) -> None:
        """SIGKILL: no clean-up, no last commit — what a crash leaves."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def broker():
    """A private mosquitto with make run's accounts (launcher.broker_for: the plant's, the
    ingest's of the plant_mqtt connection) but no ACL, so the tests' own publishers may send
    what no plant account may (test_privilege_faults tests the ACL)."""
    from launcher.__main__ import broker_for

    secret = load_or_create_secrets(INSTANCE)
    root = INSTANCE.var_dir / "mosquitto-mqtt-ingest"
    b = dataclasses.replace(broker_for(INSTANCE, secret, root=root), acl=())
    b.stop()
    shutil.rmtree(root, ignore_errors=True)  # no sessions of earlier runs
    b.start()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def landed(plant, warehouse_dsn, broker, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """One shift (the one with the planned broker restart) published live and landed, the
    ingest killed (SIGKILL) and restarted mid-stream; what the plant reported at the end. The
    restarted ingest runs on for the module's other tests."""
    from factory_platform.bootstrap import bootstrap_warehouse
    from plant_sim.protocols.runner import MqttTarget
    from plant_sim.runtime import Runtime

    bootstrap_warehouse(warehouse_dsn)
    with psycopg.connect(warehouse_dsn) as conn:
        conn.execute("truncate raw_mqtt.messages, raw_mqtt.ingest_session")
        conn.execute("delete from ops.load_audit where system = 'mqtt'")
        conn.execute("delete from ops.quarantine where system = 'mqtt'")
    world = plant.world
    restart = next(r for r in _truth(world, "injected_defects")
                   if r["kind"] == "mqtt_broker_restart")
    at = _ms(restart["record_id"].split("|")[1])
    shift = next(r for r in _truth(world, "shift_calendar")
                 if _ms(r["shift_start_at"]) <= at < _ms(r["shift_end_at"]))
    a, b = _ms(shift["shift_start_at"]), _ms(shift["shift_end_at"])
    ingest = IngestProcess(tmp_path_factory.mktemp("mqtt") / "ingest.log")
    ingest.start()
    try:
        def subscribed() -> bool:
            with psycopg.connect(warehouse_dsn) as conn:
                row = conn.execute("select connected from raw_mqtt.ingest_session").fetchone()
            return bool(row and row[0])

        _wait(subscribed, 60, f"the ingest subscribes ({ingest.log.read_text()[-2000:]})")
        time.sleep(0.5)  # the SUBACK
        rt = Runtime(world, mes_port=RUNTIME_MES_PORT, qms_port=None, clock_mode="live",
                     speed=SPEED, start=dt.datetime.fromtimestamp(a / 1000, UTC).strftime(
                         "%Y-%m-%dT%H:%M:%SZ"), inbox=tmp_path_factory.mktemp("inbox"),
                     mqtt=MqttTarget("127.0.0.1", broker.port, broker.user, broker.password,
                                     "plant-sim-mqtt-ingest-test"),
                     broker_restart=broker.restart)
        rt.start()
        try:
            pub = rt.shopfloor.mqtt
            # a third into the shift (the rest is still to be published), once rows land
            _wait(lambda: _ms(pub.status()["position"]) > a + (b - a) // 3, 60,
                  "the plant publishes")
            _wait(lambda: _count(warehouse_dsn) > 0, 60,
                  f"messages land ({ingest.log.read_text()[-3000:]})")
            ingest.kill()
            at_kill = _count(warehouse_dsn)
            time.sleep(1.0)  # the plant publishes on; the broker queues for the session
            ingest.start()

            def done() -> bool:
                """The clock 15 plant minutes past the shift, everything due published (the
                plan may end inside the shift) and acknowledged."""
                now = rt.clock.now_ms()
                st = pub.status()
                return (now > b + 15 * 60_000 and st["acked"] >= st["published"]
                        and st["published"] == len(_plan(world, a, now - 5000)))

            _wait(done, 120, "the plant publishes the shift and 15 minutes more, acknowledged")
            rt.shopfloor.mqtt.stop()  # nothing more is published: what it reports is final
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{RUNTIME_MES_PORT}/api/v1/health", timeout=10) as r:
                health = json.load(r)
        finally:
            rt.stop()
        status = health["shopfloor"]["mqtt"]
        # the restarted ingest (its start takes seconds) drains what the broker kept for the
        # session: wait for as many rows as the plant published distinct ids, then a little
        # longer (a duplicate could only show as an error, never as a row)
        published = {mid for mid, _, _ in _plan(world, a, _ms(status["position"]))}
        _wait(lambda: _count(warehouse_dsn) >= len(published), 180,
              f"{len(published)} distinct messages land ({ingest.log.read_text()[-3000:]})")
        time.sleep(1)
        yield {"a": a, "b": b, "status": status, "at_kill": at_kill, "ingest": ingest,
               "published_upto": _ms(status["position"]), "first": a}
    finally:
        ingest.stop()
        # the shared warehouse as found: no stale heartbeat (extract_mqtt would fail on it in
        # a later module), no rows of this module's shift in raw, audit or quarantine
        with psycopg.connect(warehouse_dsn) as conn:
            conn.execute("truncate raw_mqtt.messages, raw_mqtt.ingest_session")
            for table in ("ops.load_audit", "ops.quarantine", "ops.source_incident"):
                conn.execute(f"delete from {table} where system = 'mqtt'")


def _plan(world: Path, first_ms: int, upto_ms: int) -> list[tuple[str, str, str]]:
    """(message_id, kind, machine) of every publish the plant's plan makes in the run."""
    with sqlite3.connect(world / "shopfloor" / "shopfloor.sqlite") as c:
        return c.execute("select message_id, kind, machine_code from mqtt where publish_ms >= ? "
                         "and publish_ms <= ? order by publish_ms, seq",
                         (first_ms, upto_ms)).fetchall()


def test_a_connection_it_cannot_read_is_reported_without_its_password(monkeypatch, caplog
                                                                       ) -> None:
    """A plant_mqtt connection Airflow cannot parse: the ingest exits (2) with one line naming
    the connections and why, not a traceback, and the password is in nothing it logs at its
    level (Airflow's URI parser raises "Invalid connection string: <the URI>"; 3.3's lookup
    keeps that for a debug line and says "isn't defined": the line redacts a URL's user info
    and a JSON password whatever it is given)."""
    from factory_platform.extract.mqtt_ingest import main, without_credentials

    password = f"pw-{secrets.token_hex(8)}"
    monkeypatch.setenv("AIRFLOW_CONN_PLANT_MQTT", f"mqtt://plant:{password}@broker://a://b")
    with caplog.at_level("INFO"):
        assert main([]) == 2
    assert ("cannot read the connections plant_mqtt and warehouse_load: "
            "AirflowNotFoundException: The conn_id `plant_mqtt` isn't defined") in caplog.text
    assert password not in caplog.text
    assert without_credentials(f"Invalid connection string: mqtt://plant:{password}@h://a://b."
                               ) == "Invalid connection string: mqtt://***@h://a://b."
    assert without_credentials(f'{{"login": "plant", "password": "{password}\\"x"}}'
                               ) == '{"login": "plant", "password": "***"}'


@pytest.mark.slow  # the plant, a broker, the ingest process (and dbt): ≈ 1–2 min
def test_raw_holds_each_published_message_once(landed, plant, warehouse_dsn) -> None:
    """Broker restart and SIGKILL of the ingest mid-stream: raw's message ids are exactly the
    plant's published ones; its `published` count = raw rows + its listed duplicate publishes."""
    status = landed["status"]
    assert [(x["action"], x["done"]) for x in status["actions"]
            if landed["a"] <= _ms(x["at"]) < landed["b"]].count(("broker_restart", True)) == 1
    plan = _plan(plant.world, landed["first"], landed["published_upto"])
    assert len(plan) == status["published"] == status["acked"]
    published_ids = Counter(mid for mid, _, _ in plan)
    with psycopg.connect(warehouse_dsn) as conn:
        raw = Counter(mid for (mid,) in conn.execute("select message_id from raw_mqtt.messages"))
        audit = conn.execute(
            "select sum(rows_read), sum(rows_loaded), sum(duplicates_skipped), "
            "sum(rows_quarantined) from ops.load_audit where system = 'mqtt'").fetchone()
    assert 0 < landed["at_kill"] < len(raw), "the ingest was killed mid-stream"
    assert set(raw) == set(published_ids)
    assert max(raw.values()) == 1
    plant_duplicates = {r["record_id"] for r in _truth(plant.world, "injected_defects")
                        if r["kind"] == "mqtt_duplicate"} & set(published_ids)
    assert {m for m, n in published_ids.items() if n > 1} == plant_duplicates
    assert plant_duplicates, "the shift has listed duplicate publishes"
    assert status["published"] == len(raw) + len(plant_duplicates)
    read, loaded, duplicates, quarantined = audit
    assert loaded == len(raw) and quarantined == 0
    # every delivery is counted: landed once, or a duplicate (the plant's, and redeliveries
    # after the kill and the restart)
    assert read == loaded + duplicates and duplicates >= len(plant_duplicates)


@pytest.mark.slow
def test_counts_and_states_equal_the_truth(landed, plant, warehouse_dsn) -> None:
    """Through the staging models: pieces per machine × counter in the shift (ms instants in
    (start, end]) = the truth's; state changes per machine in [start, end) = the MES's
    machine-state interval starts."""
    from _pipeline import dbt_build_selected

    dbt_build_selected(["stg_mqtt__counter_changes", "stg_mqtt__machine_state_changes",
                        "stg_mqtt__alarms"])
    a = dt.datetime.fromtimestamp(landed["a"] / 1000, UTC)
    b = dt.datetime.fromtimestamp(landed["b"] / 1000, UTC)
    with psycopg.connect(warehouse_dsn) as conn:
        counts = {(m, c): n for m, c, n in conn.execute(
            "select machine_code, counter, sum(increment) from staging.stg_mqtt__counter_changes "
            "where changed_at > %s and changed_at <= %s group by 1, 2", (a, b))}
        states = defaultdict(list)
        for m, t, s in conn.execute(
                "select machine_code, changed_at, state from staging.stg_mqtt__machine_state_changes "
                "where changed_at >= %s and changed_at < %s order by 1, 2", (a, b)):
            states[m].append((t, s))
    shifts = [r for r in _truth(plant.world, "machine_counter_shift")
              if _ms(r["shift_start_at"]) == landed["a"]]
    assert shifts and sum(int(s["good_count"]) for s in shifts) > 0
    with sqlite3.connect(plant.world / "mes" / "mes.sqlite") as c:
        mes = defaultdict(dict)
        for (body,) in c.execute("select body from machine_states"):
            r = json.loads(body)
            mes[r["machine_code"]][r["state_id"]] = r
    for s in shifts:
        machine = s["machine_code"]
        for kind in ("good", "scrap", "rework"):
            assert counts.get((machine, kind), 0) == int(s[f"{kind}_count"]), (machine, kind)
        want = sorted((_ms(r["start_at"]), r["state"]) for r in mes[machine].values()
                      if landed["a"] <= _ms(r["start_at"]) < landed["b"])
        got = [(round(t.timestamp() * 1000), state) for t, state in states[machine]]
        assert got == want, machine


@pytest.mark.slow
def test_pieces_and_pri_per_machine_shift_equal_the_truth(landed, plant, warehouse_dsn) -> None:
    """mart_oee_shift_by_signal_path on what MQTT alone delivered, for the landed shift: PQ, GQ,
    the quality ratio and PRI (each piece × the ideal cycle time of the operation its counter
    event names, from the MES's operations) equal the truth's OEE elements. Availability is
    not compared: the stream starts at the shift start, so the state the machines were in
    before their first change in it is not on this path."""
    from _pipeline import dbt_build_selected
    from factory_platform.extract.run import extract_interval

    a = dt.datetime.fromtimestamp(landed["a"] / 1000, UTC)
    b = dt.datetime.fromtimestamp(landed["b"] / 1000, UTC)
    extract_interval("mes", "operations", a - dt.timedelta(days=3), b, dsn=warehouse_dsn)
    extract_interval("eam", "equipment", a - dt.timedelta(days=60), b, dsn=warehouse_dsn)
    dbt_build_selected(["+mart_oee_shift_by_signal_path"], "--exclude", "test_type:data")
    with psycopg.connect(warehouse_dsn) as conn:
        got = {m: (pq, gq, float(pri), q) for m, pq, gq, pri, q, unknown in conn.execute(
            "select machine_code, pq, gq, pri_seconds, quality_ratio, "
            "pieces_without_operation_count from marts.mart_oee_shift_by_signal_path "
            "where signal_path = 'mqtt' and shift_start_at = %s", (a,))
            if unknown == 0 and pq > 0}
    truth = {r["machine_code"]: (int(r["pq"]), int(r["gq"]), float(r["pri_seconds"]),
                                 float(r["quality_ratio"]) if r["quality_ratio"] else None)
             for r in _truth(plant.world, "oee_machine_shift")
             if _ms(r["shift_start_at"]) == landed["a"] and int(r["pq"]) > 0}
    assert len(truth) >= 10 and set(got) == set(truth)
    for machine, (pq, gq, pri, quality) in truth.items():
        assert got[machine][:2] == (pq, gq), machine
        assert got[machine][2] == pytest.approx(pri, abs=1e-6), machine
        assert got[machine][3] == pytest.approx(quality, rel=1e-9), machine


def _publish(broker, client_id: str, messages: list[tuple[str, bytes | str]]) -> None:
    """QoS 1 publishes, each acknowledged by the broker."""
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    c.username_pw_set(broker.user, broker.password)
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    for topic, payload in messages:
        c.publish(topic, payload, qos=1).wait_for_publish(10)
    c.disconnect()
    c.loop_stop()


def _audit_totals(dsn: str) -> tuple[int, int, int, int]:
    """(received, loaded, duplicates, quarantined) over the mqtt audit rows."""
    with psycopg.connect(dsn) as conn:
        return tuple(int(v) for v in conn.execute(
            "select coalesce(sum(rows_read), 0), coalesce(sum(rows_loaded), 0), "
            "coalesce(sum(duplicates_skipped), 0), coalesce(sum(rows_quarantined), 0) "
            "from ops.load_audit where system = 'mqtt'").fetchone())


@pytest.mark.slow
def test_malformed_messages_are_quarantined_once(landed, broker, warehouse_dsn) -> None:
    """Each bad message in ops.quarantine once with its topic and reason, also when published
    twice, nothing of it in raw, the stream going on: not JSON, empty, no message_id, a bad
    event_time; an id over the 2,704 bytes raw's key index holds and a \\u0000 string (refused
    by PostgreSQL: before, such a message failed its micro-batch for ever); a payload over
    max_payload_bytes; a landed message_id published again with another payload (the landed
    row kept); numbers a staging model casts that are not integers of its type (a counter's
    "12abc", a state_code over 32 bits, a PLC's good_count 1.5: landed, each failed the whole
    staging build). The landed message again with its keys reordered is a duplicate."""
    with psycopg.connect(warehouse_dsn) as conn:
        landed_id, landed_topic, landed_payload = conn.execute(
            "select message_id, topic, payload from raw_mqtt.messages where kind = 'counter' "
            "order by message_id limit 1").fetchone()
    before = _audit_totals(warehouse_dsn)
    topic = "ENT/ERF/ERF-MACH/ERF-L1/ERF-L1-M01/counter"
    at = "2026-10-24T04:00:00.000Z"
    long_id = secrets.token_hex(3000)  # 6,000 bytes, incompressible
    bad = [(topic, b"{not json"), (topic, b""),
           (topic, json.dumps({"event_time": at})),
           (topic, json.dumps({"message_id": "bad-time-1", "event_time": "yesterday"})),
           (topic, json.dumps({"message_id": long_id, "event_time": at})),
           (topic, f'{{"message_id": "nul-1", "event_time": "{at}", "note": "a\\u0000b"}}'),
           (topic, json.dumps({"message_id": "big-1", "event_time": at,
                               "blob": "x" * (1536 * 1024)})),
           (landed_topic, json.dumps({**landed_payload, "increment": 7})),
           (topic, json.dumps({"message_id": "text-count-1", "event_time": at,
                               "counter": "good", "increment": 1, "value": "12abc"})),
           (topic.replace("counter", "state"), json.dumps({
               "message_id": "huge-state-1", "event_time": at, "state": "RUN",
               "state_code": 2 ** 40})),
           (topic.replace("counter", "plc"), json.dumps({
               "message_id": "float-plc-1", "event_time": at,
               "registers": {"good_count": 1.5, "temperature": 26.5}}))]
    reordered = json.dumps(dict(reversed(list(landed_payload.items()))))
    _publish(broker, "h1-bad-publisher", [*bad, *bad, (landed_topic, reordered)])
    _wait(lambda: _audit_totals(warehouse_dsn)[0] >= before[0] + 23, 60,
          f"the ingest takes all 23 ({landed['ingest'].log.read_text()[-2000:]})")
    received, loaded, duplicates, quarantined = (
        after - b for after, b in zip(_audit_totals(warehouse_dsn), before, strict=True))
    assert (received, loaded, duplicates, quarantined) == (23, 0, 12, 11)
    with psycopg.connect(warehouse_dsn) as conn:
        rows = conn.execute("select source, reason from ops.quarantine "
                            "where system = 'mqtt' order by reason").fetchall()
        assert conn.execute("select count(*) from raw_mqtt.messages where message_id = any(%s)",
                            (["bad-time-1", long_id, "nul-1", "big-1", "text-count-1",
                              "huge-state-1", "float-plc-1"],)).fetchone()[0] == 0
        assert conn.execute("select payload from raw_mqtt.messages where message_id = %s",
                            (landed_id,)).fetchone()[0] == landed_payload
    assert sorted(s for s, _ in rows) == sorted(
        [topic] * 8 + [landed_topic, topic.replace("counter", "state"),
                       topic.replace("counter", "plc")])
    reasons = [r for _, r in rows]
    assert len(reasons) == 11, reasons
    expected = [
        'counter payload: value "12abc" is not a 64-bit integer',
        "event_time 'yesterday' is not an ISO time with a zone",
        (f"message_id {landed_id!r} came before with another topic or payload (the first one "
         "is kept)"),
        "no message_id",
        "payload is not JSON",
        "payload is not JSON",
        f"payload of {len(bad[6][1]):,} bytes is over the limit of 1,048,576 (max_payload_bytes)",
        "plc payload: registers.good_count 1.5 is not a 64-bit integer",
        "refused by the database: index row size",
        "refused by the database: unsupported Unicode escape sequence",
        "state payload: state_code 1099511627776 is not a 32-bit integer",
    ]
    assert all(r.startswith(e) for r, e in zip(reasons, expected, strict=True)), reasons


@pytest.mark.slow
def test_a_lost_warehouse_session_loses_nothing(landed, broker, warehouse_dsn) -> None:
    """The ingest's warehouse session is terminated (a database restart, a failover): it
    reconnects, and messages published meanwhile land, each once. Its log, after a kill, a
    restart, refused messages and a lost session, holds none of the environment's secrets."""
    with psycopg.connect(warehouse_dsn) as conn:
        killed = conn.execute("select count(pg_terminate_backend(pid)) from pg_stat_activity "
                              "where application_name = 'sfdp-mqtt-ingest'").fetchone()[0]
    assert killed == 1
    ids = [f"probe-{i:03d}" for i in range(50)]
    _publish(broker, "h1-probe-publisher", [
        ("ENT/ERF/ERF-MACH/ERF-L1/ERF-L1-M01/probe",
         json.dumps({"message_id": mid, "event_time": "2026-10-24T04:00:00.000Z"}))
        for mid in ids])

    def landed_probes() -> dict[str, int]:
        with psycopg.connect(warehouse_dsn) as conn:
            return dict(conn.execute("select message_id, count(*) from raw_mqtt.messages "
                                     "where kind = 'probe' group by 1").fetchall())

    _wait(lambda: len(landed_probes()) == len(ids), 60,
          f"the probes land ({landed['ingest'].log.read_text()[-2000:]})")
    assert landed_probes() == dict.fromkeys(ids, 1)
    log = landed["ingest"].log.read_text()
    assert "warehouse unavailable" in log
    secret = load_or_create_secrets(INSTANCE)
    assert secret["MQTT_PASSWORD"] and len(secret) > 3
    assert [k for k, v in secret.items() if len(v) >= 8 and v in log] == []


@pytest.mark.slow
def test_extract_mqtt_task_checks_the_ingest(landed, warehouse_dsn) -> None:
    """extract_mqtt's task, as the DAG's task runs it (extract_scheduled, the loader's
    connection: its grants on the audit, the heartbeat and the incidents): sums the interval's
    audit — its counts are raw's rows and quarantine's, every message received counted once —
    and succeeds while the heartbeat is fresh; fails (incident ingest_down) once it is older
    than two minutes, and the next run that finds it alive resolves the incident. (The task
    itself is the factory's, the same for every system, run through Airflow by
    tests/extract/files (the file drops) and tests/e2e (the others); a dag.test() here
    re-parsed the whole dags folder for ~12 s.)"""
    from factory_platform.extract.mqtt import IngestNotAlive
    from factory_platform.extract.run import extract_scheduled
    from factory_platform.warehouse import warehouse_dsn as role_dsn

    loader = role_dsn("warehouse_load")
    with psycopg.connect(warehouse_dsn) as conn:
        first, last = conn.execute("select min(started_at), max(started_at) from ops.load_audit "
                                   "where system = 'mqtt'").fetchone()
        rows = conn.execute("select count(*) from raw_mqtt.messages").fetchone()[0]
        refused = conn.execute("select count(*) from ops.quarantine "
                               "where system = 'mqtt'").fetchone()[0]
    start = first.replace(second=0, microsecond=0)
    end = last + dt.timedelta(minutes=1)
    summary = extract_scheduled("mqtt", "messages", start, end, dsn=loader)
    json.dumps(summary)  # the task's return value: its XCom
    assert summary["rows_loaded"] == rows > 0
    assert summary["rows_quarantined"] == refused == 11  # test_malformed_messages_…
    assert summary["rows_read"] == rows + refused + summary["duplicates_skipped"]
    assert summary["ingest_connected"] is True and summary["ingest_age_s"] < 60
    for _ in range(3):  # the live ingest beats every 5 s: it may between update and check
        with psycopg.connect(warehouse_dsn) as conn:
            conn.execute("update raw_mqtt.ingest_session "
                         "set beat_at = clock_timestamp() - interval '10 minutes'")
        try:
            extract_scheduled("mqtt", "messages", start, end, dsn=loader)
        except IngestNotAlive as exc:
            assert "last reported at" in str(exc)
            break
    else:
        pytest.fail("extract_mqtt passed on a heartbeat 10 minutes old")
    assert _open_incidents(warehouse_dsn) == ["ingest_down"]
    with psycopg.connect(warehouse_dsn) as conn:
        conn.execute("update raw_mqtt.ingest_session set beat_at = clock_timestamp()")
    extract_scheduled("mqtt", "messages", start, end, dsn=loader)
    assert _open_incidents(warehouse_dsn) == []


def _open_incidents(dsn: str, kind: str = "kind") -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [r for (r,) in conn.execute(
            f"select {kind} from ops.source_incident "  # kind: a column name of ours
            "where system = 'mqtt' and resolved_at is null")]


@pytest.mark.slow
def test_a_refused_login_fails_extract_mqtt_with_the_brokers_reason(landed, warehouse_dsn
                                                                     ) -> None:
    """An ingest whose password the broker refuses: it retries, logs the refusal once and
    never the password, and its heartbeat carries the broker's reason; once it has not been
    subscribed for longer than two minutes (its row back-dated) a scheduled extract_mqtt fails
    with that reason (incident ingest_down) although the ingest reports — before, a fresh
    heartbeat with connected false passed. Its row gone, the next run resolves the incident."""
    import logging
    from dataclasses import replace

    from factory_platform.extract.mqtt import IngestNotAlive, broker_settings
    from factory_platform.extract.mqtt_ingest import Ingest
    from factory_platform.extract.run import extract_scheduled
    from factory_platform.warehouse import warehouse_dsn as role_dsn

    wrong = f"wrong-{secrets.token_hex(8)}"
    client_id = "sfdp-h1-refused-login"
    settings = replace(broker_settings("plant_mqtt", "ENT/#"), password=wrong,
                       client_id=client_id)
    lines: list[str] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = lambda record: lines.append(handler.format(record))
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.DEBUG)
    ingest = Ingest(settings, role_dsn("warehouse_load"))
    attempts: list[str] = []
    answer = ingest._on_connect
    ingest._on_connect = lambda *args: (attempts.append(str(args[3])), answer(*args))
    runner = threading.Thread(target=ingest.run, daemon=True)
    runner.start()

    def reported() -> tuple | None:
        with psycopg.connect(warehouse_dsn) as conn:
            return conn.execute("select connected, disconnected_since, last_error from "
                                "raw_mqtt.ingest_session where client_id = %s and last_error "
                                "is not null", (client_id,)).fetchone()
    try:
        _wait(lambda: len(attempts) >= 3 and reported(), 30, "the refused ingest reports")
    finally:
        ingest.stop()
        runner.join(15)
        root.removeHandler(handler)
        root.setLevel(level)
    assert not runner.is_alive()
    connected, down_since, last_error = reported()
    assert (connected, last_error) == (False, "the broker refused the connection: Not authorized")
    assert down_since is not None
    assert set(attempts) == {"Not authorized"}
    refusals = [line for line in lines if "refused the connection" in line]
    assert len(refusals) == 1, lines  # once, though paho tried again and again
    assert not [line for line in lines if wrong in line]
    start = dt.datetime.now(UTC).replace(second=0, microsecond=0)
    with psycopg.connect(warehouse_dsn) as conn:
        conn.execute("update raw_mqtt.ingest_session set beat_at = clock_timestamp(), "
                     "disconnected_since = clock_timestamp() - interval '10 minutes' "
                     "where client_id = %s", (client_id,))
    with pytest.raises(IngestNotAlive, match="has not been subscribed to its broker for "
                       "6.. s: the broker refused the connection: Not authorized"):
        extract_scheduled("mqtt", "messages", start, start + dt.timedelta(minutes=15),
                          dsn=role_dsn("warehouse_load"))
    (reason,) = _open_incidents(warehouse_dsn, "reason")
    assert client_id in reason and "Not authorized" in reason and wrong not in reason
    with psycopg.connect(warehouse_dsn) as conn:
        conn.execute("delete from raw_mqtt.ingest_session where client_id = %s", (client_id,))
    extract_scheduled("mqtt", "messages", start, start + dt.timedelta(minutes=15),
                      dsn=warehouse_dsn)
    assert _open_incidents(warehouse_dsn) == []


@pytest.mark.slow
def test_without_an_ingest_scheduled_runs_fail_and_reloads_report(landed, warehouse_dsn
                                                                   ) -> None:
    """No ingest has ever reported (a deployment where it never started): a scheduled
    extract_mqtt fails, incident ingest_down — before, it warned and succeeded for ever. A
    reload or backfill of a window (extract_interval) reports what raw holds, as it would
    whatever the ingest's state. (The module's ingest is stopped here: the last test.)"""
    from factory_platform.extract.mqtt import IngestNotAlive
    from factory_platform.extract.run import extract_interval, extract_scheduled

    landed["ingest"].stop()
    with psycopg.connect(warehouse_dsn) as conn:
        conn.execute("truncate raw_mqtt.ingest_session")
        first, last = conn.execute("select min(started_at), max(started_at) from ops.load_audit "
                                   "where system = 'mqtt'").fetchone()
        rows = conn.execute("select count(*) from raw_mqtt.messages").fetchone()[0]
    start = first.replace(second=0, microsecond=0)
    end = last + dt.timedelta(minutes=1)
    with pytest.raises(IngestNotAlive, match="no MQTT ingest has ever reported"):
        extract_scheduled("mqtt", "messages", start, end, dsn=warehouse_dsn)
    assert _open_incidents(warehouse_dsn) == ["ingest_down"]
    summary = extract_interval("mqtt", "messages", start, end, dsn=warehouse_dsn)
    assert summary["rows_loaded"] == rows > 0
    assert summary["ingest_client_id"] is None
