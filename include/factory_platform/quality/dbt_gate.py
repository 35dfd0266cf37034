"""The dbt half of the quality gate: run the `gate`-tagged dbt tests, record results per scope.

Gate tests (generic test `gate` in dbt_project/tests/generic/gate.sql) sit on the publish
models; they are excluded from the models' own builds (transform.py) so that one bad scope does
not stop the others. Here they run together (`dbt test --select tag:gate`, failing rows stored
whole in `dq_failures`), and every test writes one `dq.check_result` row per scope (site ×
production day) of its model: the scope's failing rows (0 when it passed) and up to ten of
their business keys. `dq.scope_status` then decides what may be published.

The step also records what it checked (checked.py): under the publish-models lock (no model is
rewritten meanwhile) it hashes every publish model's rows per scope, runs the tests, hashes again
(a difference fails the step), and writes the results, the hashes (`dq.checked_publish`) and its
completion (`dq.gate_step`, step `dbt_gate`) in one transaction. Scopes that hold an effective
ERP posting but no publish row any more are evaluated too (as empty, passing every check).
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from factory_platform.dbt_project import run_dbt

log = logging.getLogger(__name__)

SAMPLE_KEYS = 10


class GateCheckError(RuntimeError):
    """A gate test could not run (SQL error, missing relation): its scopes stay undecided."""


@dataclass
class GateCheck:
    name: str
    model: str
    severity: str
    failing_rows: int
    failing_scopes: int
    scopes: int


def run_dbt_gate(dsn: str, run_id: str) -> list[GateCheck]:
    """Run every gate test, write its results per scope to dq.check_result, record what was
    checked and that the step completed; return a summary."""
    import psycopg

    from factory_platform.quality.checked import (
        MESSAGE_MODELS,
        clear_step,
        publish_models_locked,
        record_checked,
        scope_hashes,
        step_done,
    )
    from factory_platform.warehouse import ensure_warehouse_once

    ensure_warehouse_once(dsn)
    clear_step(dsn, run_id, "dbt_gate")
    with psycopg.connect(dsn) as conn, publish_models_locked(conn):
        before = {t: scope_hashes(conn, t) for t in MESSAGE_MODELS}
        conn.commit()
        with tempfile.TemporaryDirectory(prefix="dbt-gate-") as target:
            # return code 1 means a test failed: that is a result, read from run_results.json
            done = run_dbt(dsn, "test", "--select", "tag:gate", "--store-failures",
                           target_path=target)
            results_file = Path(target) / "run_results.json"
            if not results_file.exists():
                raise GateCheckError(
                    f"dbt test --select tag:gate did not run:\n{done.stdout[-4000:]}"
                    f"\n{done.stderr[-2000:]}")
            results = json.loads(results_file.read_text())["results"]
            manifest = json.loads((Path(target) / "manifest.json").read_text())
        errors = [r for r in results if r["status"] == "error"]
        if errors:
            raise GateCheckError("gate tests failed to run: " + "; ".join(
                f"{r['unique_id']}: {(r.get('message') or '').splitlines()[0:1]}"
                for r in errors))
        after = {t: scope_hashes(conn, t) for t in MESSAGE_MODELS}
        changed = sorted(t for t in MESSAGE_MODELS if before[t] != after[t])
        if changed:  # the lock should make this impossible: never record unchecked content
            raise GateCheckError(f"publish models changed while the gate tests ran: {changed}")
        scopes_by_model = {MESSAGE_MODELS[t]: sorted(after[t]) for t in MESSAGE_MODELS}
        checks = _record(conn, run_id, results, manifest, scopes_by_model)
        written = record_checked(conn, run_id, after)
        step_done(conn, run_id, "dbt_gate", {"checks": len(checks), "checked_scopes": written})
        conn.commit()
    return checks


def _record(conn, run_id: str, results: list[dict], manifest: dict,
            scopes_by_model: dict[str, list[tuple]]) -> list[GateCheck]:
    """Write one dq.check_result row per gate test and scope (part of the caller's
    transaction). A test on a publish model evaluates every scope of `scopes_by_model`."""
    from psycopg.types.json import Jsonb

    checks = []
    for result in results:
        node = manifest["nodes"][result["unique_id"]]
        model = manifest["nodes"][node["attached_node"]]
        model_relation = f'{model["schema"]}.{model["alias"]}'
        severity = node["config"]["severity"].lower()
        scopes = scopes_by_model.get(model_relation)
        if scopes is None:
            scopes = conn.execute(
                f"select distinct site_code, production_date from {model_relation} "
                "where site_code is not null and production_date is not null").fetchall()
        failing = {}
        if result["status"] in ("fail", "warn"):
            if not result.get("relation_name"):  # never count a failing check as passed
                raise GateCheckError(f"{node['name']} failed but dbt stored no failing rows")
            failing = {
                (site, day): (count, keys) for site, day, count, keys in conn.execute(
                    f"select site_code, production_date, count(*), "
                    f"(array_agg(business_key order by business_key))[1:{SAMPLE_KEYS}] "
                    f"from {result['relation_name']} group by 1, 2")
            }
        rows = []
        for site, day in scopes:
            count, keys = failing.get((site, day), (0, []))
            rows.append((run_id, node["name"], "publish", model_relation, severity, site, day,
                         count, Jsonb(keys)))
        with conn.cursor() as cursor:
            cursor.executemany(
                "insert into dq.check_result (run_id, check_name, check_kind, "
                "source_system, target, severity, site_code, production_day, "
                "failing_count, sample_keys) values (%s, %s, 'dbt', %s, %s, %s, %s, %s, "
                "%s, %s)", rows)
        checks.append(GateCheck(node["name"], model_relation, severity,
                                sum(c for c, _ in failing.values()), len(failing), len(scopes)))
        if failing:
            log.warning("gate check %s (%s) fails %d rows in %d scope(s): %s", node["name"],
                        severity, checks[-1].failing_rows, len(failing),
                        ", ".join(f"{s} {d}" for s, d in sorted(failing)))
    return checks
