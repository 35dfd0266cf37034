"""Benchmark the MQTT durable subscriber: `mqtt_sustained_msgs_per_s` — machine events landed
in raw_mqtt.messages per second while a load generator publishes at a fixed rate for a
sustained period — and the end-to-end lag from publish to the committed row
(`mqtt_lag_p95_s`, `mqtt_lag_p50_s`, `mqtt_lag_max_s`).

Everything is the platform's own, as `make run` starts it: a private mosquitto (the launcher's
configuration), the ingest process (`python -m factory_platform.extract.mqtt_ingest`, MQTT 5
persistent session, QoS 1, acknowledged after each micro-batch's commit) writing as the loader
role into a provisioned warehouse. The load generator is a separate process (paho, QoS 1): a
plant of `--machines` machines publishing counter events to
`ENT/BENCH/BENCH-AREA/BENCH-L1/<machine>/counter`, paced to `--rate` messages a second for
`--seconds` (the goal: 5,000 msg/s for 600 s, p95 lag ≤ 2 s; a plant of 12 machines × 20 tags
at 1 Hz sends 240 msg/s). Each payload carries its publish time (`published_at_ms`); the lag
of a message is its row's `received_at` (clock_timestamp() at the insert, milliseconds before
the commit) minus that. The landed rate is the rows landed divided by the span from the first
publish to the last row landed, so an ingest that falls behind shows a lower rate and a growing
lag. Also checked: every published message landed exactly once (no loss, no duplicate).

Its own instance (var/bench-mqtt): PostgreSQL 127.0.0.1:55495, broker :18998.

Usage: .venv/bin/python bench/bench_mqtt.py [--seconds 600] [--rate 5000] [--machines 12]
Figures merge into bench/results.json for a run of 600 s or more (or with --merge).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "include"))
sys.path.insert(0, str(ROOT / "bench"))

from _cluster import start_provisioned_cluster
from _results import merge_results
from launcher.settings import (
    Instance,
    load_or_create_secrets,
    platform_environment,
)

INSTANCE = Instance(name="bench-mqtt", pg_port=55495, api_port=18995, mes_port=18996,
                    qms_port=18997, redis_port=56495, mqtt_port=18998, opcua_port=48495,
                    modbus_port=15495)
TOPIC = "ENT/BENCH/BENCH-AREA/BENCH-L1/{machine}/counter"


def generate(rate: float, seconds: float, machines: int, run: str, publisher: int) -> None:
    """One load generator process: QoS 1 publishes paced to `rate` a second (the payload built
    as a string: the generator must not be what is measured); prints how many it published,
    how many the broker acknowledged and when the last acknowledgement came."""
    import paho.mqtt.client as mqtt

    password = os.environ["BENCH_MQTT_PASSWORD"]
    acked = 0
    last_ack = time.time()

    def on_publish(*_args) -> None:
        nonlocal acked, last_ack
        acked += 1
        last_ack = time.time()

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-{run}-{publisher}")
    c.username_pw_set("plant", password)
    c.max_inflight_messages_set(10_000)
    c.max_queued_messages_set(0)
    c.on_publish = on_publish
    c.connect("127.0.0.1", INSTANCE.mqtt_port)
    c.loop_start()
    names = [f"BENCH-M{publisher + 1:02d}{i + 1:02d}" for i in range(machines)]
    topics = [TOPIC.format(machine=name) for name in names]
    values = [0] * machines
    started = time.time()
    total = int(rate * seconds)
    i, second, prefix = 0, -1, ""
    while i < total:
        now = time.time()
        due = min(total, int((now - started) * rate) + 1)
        now_ms = int(now * 1000)
        if now_ms // 1000 != second:
            second = now_ms // 1000
            prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        event_time = f"{prefix}.{now_ms % 1000:03d}Z"
        while i < due:
            k = i % machines
            values[k] += 1
            c.publish(topics[k], (
                f'{{"message_id": "{run}-{publisher}-{i:09d}", "machine_code": "{names[k]}", '
                f'"kind": "counter", "event_time": "{event_time}", "counter": "good", '
                f'"increment": 1, "value": {values[k]}, "total": {values[k]}, '
                f'"published_at_ms": {now_ms}}}'), qos=1)
            i += 1
        time.sleep(0.005)
    published_s = time.time() - started
    deadline = time.time() + 300
    while acked < total and time.time() < deadline:
        time.sleep(0.1)
    c.disconnect()
    c.loop_stop()
    print(json.dumps({"published": total, "acked": acked, "publish_seconds": published_s,
                      "acked_seconds": last_ack - started}), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--rate", type=float, default=5000)
    ap.add_argument("--machines", type=int, default=12)
    ap.add_argument("--merge", action="store_true", help="merge a run shorter than 600 s too")
    ap.add_argument("--verbose", action="store_true", help="the ingest logs every micro-batch")
    ap.add_argument("--publishers", type=int, default=2,
                    help="load generator processes, each publishing rate / publishers")
    ap.add_argument("--generate", help=argparse.SUPPRESS)  # a generator process's run id
    ap.add_argument("--publisher", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.generate:
        generate(args.rate, args.seconds, args.machines, args.generate, args.publisher)
        return 0

    import psycopg
    from launcher.__main__ import broker_for, mqtt_ingest_environment

    secret = load_or_create_secrets(INSTANCE)
    cluster = start_provisioned_cluster(INSTANCE, secret)
    broker = broker_for(INSTANCE, secret)  # make run's accounts and ACL
    broker.stop()
    shutil.rmtree(broker.root, ignore_errors=True)
    broker.start()
    env = {**os.environ, **platform_environment(INSTANCE, secret),
           "PYTHONPATH": str(ROOT / "include")}
    log = INSTANCE.var_dir / "mqtt-ingest.log"
    dsn = cluster.dsn("warehouse")
    ingest = None
    generators: list[subprocess.Popen] = []
    run = f"bench{int(time.time())}"
    try:
        with open(log, "wb") as fh:
            ingest = subprocess.Popen(
                [sys.executable, "-m", "factory_platform.extract.mqtt_ingest",
                 "--log-level", "DEBUG" if args.verbose else "INFO"],
                env=mqtt_ingest_environment(env),
                stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while True:
            with psycopg.connect(dsn) as conn:
                if conn.execute("select 1 from raw_mqtt.ingest_session where connected"
                                ).fetchone():
                    break
            if ingest.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the ingest did not connect: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        time.sleep(1)
        print(f"publishing {args.rate:.0f} msg/s for {args.seconds:.0f} s "
              f"({args.machines} machines) …", flush=True)
        generators = [subprocess.Popen(
            [sys.executable, __file__, "--generate", run, "--publisher", str(k),
             "--rate", str(args.rate / args.publishers), "--seconds", str(args.seconds),
             "--machines", str(max(1, args.machines // args.publishers))],
            env={**env, "BENCH_MQTT_PASSWORD": secret["MQTT_PASSWORD"]},
            stdout=subprocess.PIPE, text=True) for k in range(args.publishers)]
        reports = [json.loads(g.communicate(timeout=args.seconds + 900)[0].strip()
                              .splitlines()[-1]) for g in generators]
        published = {"published": sum(r["published"] for r in reports),
                     "acked": sum(r["acked"] for r in reports),
                     "publish_seconds": max(r["publish_seconds"] for r in reports),
                     "acked_seconds": max(r["acked_seconds"] for r in reports)}
        # the ingest drains what the broker accepted for its session (given up after 60 s
        # without a new row)
        landed, last = -1, time.monotonic()
        while time.monotonic() - last < 60:
            with psycopg.connect(dsn) as conn:
                n = conn.execute("select count(*) from raw_mqtt.messages").fetchone()[0]
            if n != landed:
                landed, last = n, time.monotonic()
            if landed >= published["acked"]:
                break
            time.sleep(1)
        with psycopg.connect(dsn) as conn:
            rows, first_pub, last_row, p50, p95, lag_max = conn.execute(
                """
                with lag as (
                    select (payload ->> 'published_at_ms')::bigint as pub_ms,
                           extract(epoch from received_at) * 1000 as row_ms
                    from raw_mqtt.messages where message_id like %s
                )
                select count(*), min(pub_ms), max(row_ms),
                       percentile_cont(0.5) within group (order by row_ms - pub_ms),
                       percentile_cont(0.95) within group (order by row_ms - pub_ms),
                       max(row_ms - pub_ms)
                from lag
                """, (f"{run}-%",)).fetchone()
            read, loaded, dups, batches = conn.execute(
                "select sum(rows_read), sum(rows_loaded), sum(duplicates_skipped), count(*) "
                "from ops.load_audit where system = 'mqtt'").fetchone()
    finally:
        for g in generators:
            if g.poll() is None:
                g.kill()
        if ingest is not None and ingest.poll() is None:
            ingest.terminate()
            ingest.wait(timeout=60)
        broker.stop()
        cluster.stop()
    span_s = (float(last_row) - first_pub) / 1000
    figures = {
        "mqtt_sustained_msgs_per_s": round(rows / span_s, 1),
        # what the broker accepted from the generators per second (its PUBACKs)
        "mqtt_offered_msgs_per_s": round(published["acked"] / published["acked_seconds"], 1),
        "mqtt_lag_p50_s": round(p50 / 1000, 3),
        "mqtt_lag_p95_s": round(p95 / 1000, 3),
        "mqtt_lag_max_s": round(float(lag_max) / 1000, 3),
        "mqtt_sustained_seconds": round(published["publish_seconds"], 1),
        "mqtt_messages_landed": rows,
    }
    print(f"published {published['published']:,} in {published['publish_seconds']:.1f} s "
          f"(acknowledged {published['acked']:,} by {published['acked_seconds']:.1f} s); landed {rows:,} once each "
          f"(audit: {read:,} received, {loaded:,} loaded, {dups:,} duplicates, "
          f"{batches} minute batches)")
    for key, value in figures.items():
        print(f"  {key:28} {value}")
    if published["acked"] != published["published"]:
        print("FAILED: the broker did not accept every message the generators published "
              "within 300 s (the generators, not the ingest, were the limit)", flush=True)
        return 1
    if rows != published["acked"] or loaded != rows:
        print("FAILED: not every message the broker accepted landed exactly once", flush=True)
        return 1
    if args.seconds >= 600 or args.merge:
        merge_results(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
