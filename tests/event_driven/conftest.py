"""Fixtures of the event-driven tests."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import psycopg
import pytest
from _dags import pause_all_but, restore_paused
from launcher import processes
from launcher.settings import PROJECT_ROOT, load_or_create_secrets, service_environment
from launcher.settings import test_instance as instance_under_test

AIRFLOW = str(Path(sys.executable).parent / "airflow")
# the live plant of the event test serves its MES here (the session plant keeps its own)
LIVE_MES_PORT_OFFSET = 3


@pytest.fixture(scope="package")
def airflow_services():
    """The test instance's API server, scheduler and triggerer (LocalExecutor, as `make run`
    starts them; no DAG processor: a test writes the DAGs it runs to the metadata DB), started
    once for the tests here that need them. Every DAG is paused while they run (a test
    unpauses what it runs, and pauses it again); afterwards each is as it was. Their
    environment names the live MES of the event test (`AIRFLOW_CONN_MES_API`)."""
    instance = instance_under_test()
    key = load_or_create_secrets(instance)["MES_API_KEY"]
    env = service_environment(instance, {
        **os.environ, "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "AIRFLOW_CONN_MES_API":
            f"http://mes:{key}@127.0.0.1:{instance.mes_port + LIVE_MES_PORT_OFFSET}"})
    paused_before = pause_all_but(())
    try:
        for name, args in {"api-server": ["api-server", "--port", str(instance.api_port)],
                           "scheduler": ["scheduler", "--skip-serve-logs"],
                           "triggerer": ["triggerer", "--skip-serve-logs"]}.items():
            (instance.log_dir / f"{name}.log").unlink(missing_ok=True)
            processes.start_service(name, [AIRFLOW, *args], env, instance.pid_dir,
                                    instance.log_dir, PROJECT_ROOT)
        yield instance
    finally:
        leftovers = processes.stop_all(str(instance.var_dir), instance.pid_dir, timeout_s=10)
        restore_paused(paused_before)
    assert leftovers == []


@pytest.fixture()
def mes_marks(warehouse_dsn) -> Callable[[dict[str, datetime]], None]:
    """Sets MES high-water marks (entity → loaded_upto) for a test; the session's marks come
    back after it."""
    with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
        saved = conn.execute("select entity, loaded_upto, batch_id from ops.extract_watermark "
                             "where system = 'mes'").fetchall()

    def set_marks(marks: dict[str, datetime]) -> None:
        with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
            for entity, upto in marks.items():
                conn.execute(
                    "insert into ops.extract_watermark (system, entity, loaded_upto, batch_id) "
                    "values ('mes', %s, %s, 'event_driven_test') on conflict (system, entity) "
                    "do update set loaded_upto = excluded.loaded_upto", (entity, upto))

    yield set_marks
    with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
        conn.execute("delete from ops.extract_watermark where system = 'mes'")
        for entity, upto, batch_id in saved:
            conn.execute("insert into ops.extract_watermark (system, entity, loaded_upto, "
                         "batch_id) values ('mes', %s, %s, %s)", (entity, upto, batch_id))
