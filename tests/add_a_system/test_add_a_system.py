"""Issue #14 item 2: adding a system, proven. A ninth system — a small CRM over REST with
numbered pages and a bearer token, neither of which a plant system uses — is added as what a
newcomer writes: one registry module (`crm/crm.py`) and its staging model (`crm/
stg_crm__contacts.sql`, `crm/_crm__models.yml`). Nothing in the repository changes:

* the registry reads `crm.py` from its folder through `SFDP_EXTRA_SOURCES`;
* the CRM's API is served by a fixture (`_crm_api.CrmApi`, real HTTP in a thread), reached
  through the Airflow connection `crm_api` from the environment;
* dbt runs on a temporary copy of the project, with the two staging files and the dbt source
  that `factory_platform.derived` generates from the registry.

Then everything else follows from the module: the DAG, its asset and pool, the raw schema, the
deployment's connection lines, the dbt source; the window is extracted through the declared
paginator and auth (quarantine, idempotent re-run), and staging is built and tested by dbt.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from ._crm_api import CONTACTS, T0, CrmApi

CRM_DIR = Path(__file__).parent / "crm"
TOKEN = "crm-t0ken-never-elsewhere-7731"
INTERVAL = (T0, T0 + timedelta(hours=4))
OPS_TABLES = ("ops.quarantine", "ops.load_audit", "ops.schema_drift", "ops.source_incident",
              "ops.extract_watermark")


@pytest.fixture()
def crm(monkeypatch):
    """The ninth system in the registry (its folder in SFDP_EXTRA_SOURCES), and gone again."""
    from factory_platform import sources

    monkeypatch.setenv("SFDP_EXTRA_SOURCES", str(CRM_DIR))
    sources.all_sources.cache_clear()
    yield sources.get_source("crm")
    monkeypatch.delenv("SFDP_EXTRA_SOURCES")
    sources.all_sources.cache_clear()
    sys.modules.pop("factory_platform.sources._extra_crm", None)


@pytest.fixture()
def crm_api(crm, monkeypatch):
    """The CRM's API, and its Airflow connection (the token as the password) in the
    environment, as a deployment's `.env` would give it."""
    with CrmApi(TOKEN) as api:
        monkeypatch.setenv("AIRFLOW_CONN_CRM_API", json.dumps({
            "conn_type": "http", "host": "127.0.0.1", "port": api.port, "login": "platform",
            "password": TOKEN}))
        yield api


def _clean(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("drop view if exists staging.stg_crm__contacts")
        conn.execute("drop schema if exists raw_crm cascade")
        for table in OPS_TABLES:
            if conn.execute("select to_regclass(%s)", (table,)).fetchone()[0]:
                conn.execute(f"delete from {table} where system = 'crm'")


@pytest.fixture()
def dsn(warehouse_dsn):
    from factory_platform.warehouse import ensure_warehouse

    ensure_warehouse(warehouse_dsn)
    _clean(warehouse_dsn)
    yield warehouse_dsn
    _clean(warehouse_dsn)


def test_the_ninth_system_is_one_module_and_everything_else_derives_from_it(crm, tmp_path):
    import pkgutil

    from factory_platform import derived, pools, sources, warehouse
    from factory_platform.dag_factory import build_extract_dags
    from factory_platform.sources import all_sources

    # the package's own systems (eam … wms, the shop floor's opcua and mqtt) and the CRM beside
    own = {m.name for m in pkgutil.iter_modules(sources.__path__) if not m.name.startswith("_")}
    assert {"eam", "erp", "mes", "scada", "wms", "opcua"} <= own
    assert list(all_sources()) == sorted(own | {"crm"})
    assert (crm.rest.paginator.type, crm.rest.auth.type) == ("page_number", "bearer")
    assert "raw_crm" in warehouse.schemas()
    assert pools.declared_pools()["plant_crm"][0] == 4  # REST's default
    # the DAG, from dags/extract_sources.py's factory: a task per entity, the raw table as asset
    dag = build_extract_dags()["extract_crm"]
    assert [t.task_id for t in dag.tasks] == ["load_contacts"]
    task = dag.get_task("load_contacts")
    assert task.pool == "plant_crm"
    assert [o.uri.rsplit("/", 2)[-2:] for o in task.outlets] == [["raw_crm", "contacts"]]
    assert dag.doc_md == sys.modules["factory_platform.sources._extra_crm"].__doc__
    assert set(dag.tags) == {"extract", "crm", "raw"}
    # the deployment's connection lines and the dbt source, from the registry
    assert ("    AIRFLOW_CONN_CRM_API: ${AIRFLOW_CONN_CRM_API:?see .env.example}"
            in derived.compose_block(list(all_sources().values())))
    assert "AIRFLOW_CONN_CRM_API=" in derived.env_example_block(list(all_sources().values()))
    generated = tmp_path / "models/staging/crm/_crm__sources.yml"
    assert generated in derived.write_dbt_sources(tmp_path)  # (an empty project: all nine)
    assert derived.sources_yml_disagreements(crm, generated) == []
    # ... and the repository's check names everything the new system still lacks there
    problems = derived.check()
    assert any("_crm__sources.yml: missing" in p for p in problems)
    assert any(p.startswith("docker-compose.yml") for p in problems)
    assert any(p.startswith(".env.example") for p in problems)


def test_the_crm_window_loads_through_its_declared_pages_and_token(crm_api, dsn):
    from factory_platform.extract.run import extract_interval

    summary = extract_interval("crm", "contacts", *INTERVAL, run_id="add-a-system", dsn=dsn)
    window_start = INTERVAL[0] - timedelta(hours=1)  # the module's lookback
    served = crm_api.served(window_start, INTERVAL[1])
    assert len(served) == 9 and len(CONTACTS) == 10  # C-109 changed before the window
    assert (summary["rows_read"], summary["rows_loaded"], summary["rows_quarantined"]) == (9, 8, 1)
    # three numbered pages of at most 3 (the API's cap), each with the token as Bearer
    assert [r.query["page"] for r in crm_api.requests] == ["1", "2", "3"]
    assert {r.query["per_page"] for r in crm_api.requests} == {"100"}
    assert {r.query["modified_from"] for r in crm_api.requests} == {"2026-11-02T07:00:00Z"}
    assert {r.authorization for r in crm_api.requests} == {f"Bearer {TOKEN}"}
    expected = sorted((c["contact_id"], c["modified_at"]) for c in served if c["email"])
    with psycopg.connect(dsn) as conn:
        landed = sorted((k, m.strftime("%Y-%m-%dT%H:%M:%SZ")) for k, m in conn.execute(
            "select contact_id, modified_at at time zone 'UTC' from raw_crm.contacts"))
        quarantined = conn.execute(
            "select record_ref, reason, source from ops.quarantine where system = 'crm'"
        ).fetchall()
        name = conn.execute("select account_name from raw_crm.contacts "
                            "where contact_id = 'C-102'").fetchone()[0]
    assert landed == expected
    assert [(ref, reason) for ref, reason, _ in quarantined] == [
        ("C-107", "required field 'email' is missing or null")]
    assert "/crm/v2/contacts page 3" in quarantined[0][2]
    assert name == "上海精密机械有限公司"
    # a re-run of the interval replaces its rows: the same table
    extract_interval("crm", "contacts", *INTERVAL, run_id="add-a-system-again", dsn=dsn)
    with psycopg.connect(dsn) as conn:
        again = sorted((k, m.strftime("%Y-%m-%dT%H:%M:%SZ")) for k, m in conn.execute(
            "select contact_id, modified_at at time zone 'UTC' from raw_crm.contacts"))
    assert again == expected


def _dbt_project_with_the_crm(tmp_path: Path, project_root: Path) -> Path:
    """A copy of the dbt project with the CRM's staging model and its generated dbt source."""
    from factory_platform import derived

    project = tmp_path / "dbt_project"
    shutil.copytree(project_root / "dbt_project", project,
                    ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"))
    staging = project / "models" / "staging" / "crm"
    staging.mkdir(parents=True)
    for name in ("stg_crm__contacts.sql", "_crm__models.yml"):
        shutil.copy(CRM_DIR / name, staging / name)
    assert derived.write_dbt_sources(project) == [staging / "_crm__sources.yml"]
    return project


@pytest.mark.slow
def test_the_crm_runs_end_to_end_extract_staging_and_its_tests(crm_api, dsn, tmp_path,
                                                               project_root):
    from factory_platform.extract.run import extract_interval

    extract_interval("crm", "contacts", *INTERVAL, dsn=dsn)
    project = _dbt_project_with_the_crm(tmp_path, project_root)
    result = subprocess.run(
        [str(project_root / ".venv" / "bin" / "dbt"), "build", "--project-dir", str(project),
         "--profiles-dir", str(project), "--select", "source:crm+", "--threads", "2"],
        cwd=project, env=dict(os.environ, DBT_SEND_ANONYMOUS_USAGE_STATS="false"),
        capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-6000:]
    results = json.loads((project / "target" / "run_results.json").read_text())["results"]
    statuses = {r["unique_id"].split(".")[0]: [] for r in results}
    for r in results:
        statuses[r["unique_id"].split(".")[0]].append(r["status"])
    assert statuses == {"model": ["success"], "test": ["pass"] * 4}
    with psycopg.connect(dsn) as conn:
        rows = {r[0]: r[1:] for r in conn.execute(
            "select contact_id, email, country_code, lifecycle_stage, account_name "
            "from staging.stg_crm__contacts")}
    # the latest version of every contact in raw; the one without e-mail never got there
    assert sorted(rows) == ["C-101", "C-102", "C-103", "C-104", "C-105", "C-106", "C-108"]
    assert rows["C-104"][2] == "customer"  # its second version
    assert rows["C-101"][:2] == ("einkauf@metallbau.example", "DE")
    assert rows["C-102"][3] == "上海精密机械有限公司"
    # the real project is untouched
    assert not (project_root / "dbt_project" / "models" / "staging" / "crm").exists()
