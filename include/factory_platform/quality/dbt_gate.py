"""The dbt half of the quality gate: run the `gate`-tagged dbt tests, record results per scope.

Gate tests (generic test `gate` in dbt_project/tests/generic/gate.sql) sit on the publish
models; they are excluded from the models' own builds (transform.py) so that one bad scope does
not stop the others. Here they run together (`dbt test --select tag:gate`, failing rows stored
whole in `dq_failures`), and every test writes one `dq.check_result` row per scope (site ×
production day) of its model: the scope's failing rows (0 when it passed) and up to ten of
their business keys. `dq.scope_status` then decides what may be published.
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
    """Run every gate test, write its results per scope to dq.check_result, return a summary."""
    with tempfile.TemporaryDirectory(prefix="dbt-gate-") as target:
        # return code 1 means a test failed: that is a result, read from run_results.json
        done = run_dbt(dsn, "test", "--select", "tag:gate", "--store-failures",
                       target_path=target)
        results_file = Path(target) / "run_results.json"
        if not results_file.exists():
            raise GateCheckError(f"dbt test --select tag:gate did not run:\n{done.stdout[-4000:]}"
                                 f"\n{done.stderr[-2000:]}")
        results = json.loads(results_file.read_text())["results"]
        manifest = json.loads((Path(target) / "manifest.json").read_text())
    errors = [r for r in results if r["status"] == "error"]
    if errors:
        raise GateCheckError("gate tests failed to run: " + "; ".join(
            f"{r['unique_id']}: {(r.get('message') or '').splitlines()[0:1]}" for r in errors))
    return _record(dsn, run_id, results, manifest)


def _record(dsn: str, run_id: str, results: list[dict], manifest: dict) -> list[GateCheck]:
    import psycopg
    from psycopg.types.json import Jsonb

    checks = []
    with psycopg.connect(dsn) as conn:
        for result in results:
            node = manifest["nodes"][result["unique_id"]]
            model = manifest["nodes"][node["attached_node"]]
            model_relation = f'{model["schema"]}.{model["alias"]}'
            severity = node["config"]["severity"].lower()
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
        conn.commit()
    return checks
