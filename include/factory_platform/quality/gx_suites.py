"""Great Expectations suites as per-scope quality gates, over batches that live in dbt.

Each suite validates the rows of its dbt model `quality.qa_<suite>` (dbt_project/models/quality/):
one row per checked record with its scope (`site_code`, `production_day` — placed in a
production day by the project's one placement, macro assign_shift), its record key and the
checked values. The SQL that builds a batch is dbt's; a suite here declares what GX checks on
it: a severity (`error` blocks the scope, `warn` flags it), the key column, the expectations,
and which rows tell that a run touched a scope (`Touched`). `run_suites` runs every suite
through GX 1.x (ephemeral context, a Postgres data source from the DSN, one query asset per
suite — the model's rows of the run's scopes, nothing else — a whole-query batch definition,
an ExpectationSuite and a ValidationDefinition) with result format COMPLETE and the scope + key
columns as unexpected-index columns, so every failing row maps to its scope. It then writes, in
one transaction, one `dq.check_result` row per expectation × evaluated scope: check_name
`<suite>.<expectation_type>.<column>`, the exact failing count (0 when the scope passed) and up
to 10 failing record keys.

Which scopes a run evaluates: those with a row in the run's interval `[start, end)` (by the
row's business time, or for MES also the time the MES recorded it, so a late confirmation
re-checks its old day); the batch holds *every* row of those scopes, so a scope's result always
describes the whole scope, never a slice of it. The interval is bound as `%(start)s` /
`%(end)s` (timestamptz) and rendered client-side before GX sees the query.

Importing this module is cheap: great_expectations and psycopg are imported inside functions.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

log = logging.getLogger(__name__)

Severity = Literal["error", "warn"]
Scope = tuple[str, date]  # (site_code, production_day)

SCOPE_COLUMNS = ("site_code", "production_day")
SAMPLE_KEYS = 10  # failing record keys kept per check × scope
QUALITY_SCHEMA = "quality"  # where dbt builds the batches (models/quality, qa_<suite>)


class QualityGateFailed(Exception):
    """An error-severity suite failed: its scopes are blocked (the Airflow task fails with it)."""


# --- the registry ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Expectation:
    """One GX expectation on one column of a suite's batch.

    `type` is the GX expectation type (snake case), `kwargs` its arguments besides `column`
    (e.g. min_value / max_value). `source_system` and `target` override the suite's (row
    counts: one expectation per system).
    """

    type: str
    column: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    source_system: str | None = None
    target: str | None = None

    def check_name(self, suite: str) -> str:
        return f"{suite}.{self.type}.{self.column}"

    def describe(self) -> str:
        """`expect_column_values_to_be_between on temperature_max_celsius (≤ 150)`."""
        low, high = self.kwargs.get("min_value"), self.kwargs.get("max_value")
        if low is not None and high is not None:
            bounds = f"between {low} and {high}"
        elif low is not None:
            bounds = f"≥ {low}"
        elif high is not None:
            bounds = f"≤ {high}"
        elif self.type == "expect_column_values_to_not_be_null":
            bounds = "not null"
        else:
            bounds = ", ".join(f"{k}={v}" for k, v in self.kwargs.items())
        return f"{self.type} on {self.column} ({bounds})"


def between(column: str, min_value: float | None = None, max_value: float | None = None,
            source_system: str | None = None, target: str | None = None) -> Expectation:
    kwargs = {k: v for k, v in (("min_value", min_value), ("max_value", max_value))
              if v is not None}
    return Expectation("expect_column_values_to_be_between", column, kwargs, source_system,
                       target)


def not_null(column: str) -> Expectation:
    return Expectation("expect_column_values_to_not_be_null", column)


@dataclass(frozen=True)
class Touched:
    """The scopes a run touched, as the rows of `relation` that match `where` — a SQL condition
    on the relation's columns with the run's interval as `%(start)s` / `%(end)s`."""

    relation: str
    where: str

    def scopes_sql(self) -> str:
        return f"select site_code, production_day from {self.relation} where ({self.where})"


@dataclass(frozen=True)
class Suite:
    """A quality gate: the expectations GX checks on the rows of a dbt model (the batch).

    `relation` is the batch, by default the suite's model `quality.qa_<name>`; `target` the
    relation whose data the suite guards (recorded in dq.check_result); `touched` the rows
    that tell which scopes a run touched (their union)."""

    name: str
    source_system: str
    severity: Severity
    target: str
    key_column: str
    expectations: tuple[Expectation, ...]
    touched: tuple[Touched, ...]
    description: str = ""
    relation: str = ""

    def __post_init__(self) -> None:
        if self.severity not in ("error", "warn"):
            raise ValueError(f"suite {self.name}: severity must be error or warn")
        names = [e.check_name(self.name) for e in self.expectations]
        if len(names) != len(set(names)):
            raise ValueError(f"suite {self.name}: two expectations of one type on one column")
        if not self.touched:
            raise ValueError(f"suite {self.name}: which rows touch a scope (touched) is missing")
        if not self.relation:
            object.__setattr__(self, "relation", f"{QUALITY_SCHEMA}.{self.model}")

    @property
    def model(self) -> str:
        """The dbt model that builds the batch."""
        return f"qa_{self.name}"

    def relation_of(self, expectation: Expectation) -> str:
        return expectation.target or self.target

    def batch_sql(self) -> str:
        """The batch: the relation's rows of the scopes the interval touched, whole (the
        interval still as parameters)."""
        scopes = "\n    union\n    ".join(t.scopes_sql() for t in self.touched)
        return (f"select * from {self.relation}\n"
                f"where (site_code, production_day) in (\n    {scopes}\n)")

    @property
    def index_columns(self) -> list[str]:
        return [*SCOPE_COLUMNS, self.key_column]


# Plausible physical ranges per SCADA tag kind, in the staging unit. The simulator's historian
# (plant_sim/systems/scada.py, read only) produces temperature 29–63 °C, pressure 0.15–6.1 bar,
# vibration 0.04–2.5 mm/s, power 0.4–37 kW by machine state and type, a cumulative counter;
# its `scada_spike` defect multiplies one temperature sample by 20 (≥ 600 °C).
# The bounds leave room for real machines while catching unit slips and spikes. The batch
# (qa_scada_sensor_ranges) has a `<tag>_min_<unit>` / `<tag>_max_<unit>` column pair per kind.
@dataclass(frozen=True)
class TagRange:
    tag_name: str
    unit: str
    min_value: float | None
    max_value: float | None


SENSOR_RANGES = (
    TagRange("temperature", "celsius", -20.0, 150.0),
    TagRange("pressure", "bar", 0.0, 10.0),
    TagRange("vibration", "mm_per_second", 0.0, 20.0),
    TagRange("power", "kw", 0.0, 100.0),
    TagRange("counter", "count", 0.0, None),
)

# Systems whose rows per site × production day are compared with their trailing history
# (qa_row_counts_vs_history: the median of the previous 7 days with rows), and the relation
# counted (MES confirmations; SCADA minute samples, from the hourly aggregates).
ROW_COUNT_SYSTEMS = {
    "mes": "staging.stg_mes__confirmations",
    "scada": "conformed.fct_tag_reading_hour",
}
ROW_COUNT_RATIO = (0.5, 2.0)

# A run touches the scope of a SCADA hour that overlaps its interval, and of an MES
# confirmation recorded or started in it (a late confirmation re-checks its old day).
SCADA_TOUCHED = Touched(
    f"{QUALITY_SCHEMA}.qa_scada_sensor_ranges",
    "reading_hour_at > %(start)s::timestamptz - interval '1 hour' "
    "and reading_hour_at < %(end)s::timestamptz")
MES_TOUCHED = Touched(
    f"{QUALITY_SCHEMA}.qa_mes_confirmation_required_fields",
    "(recorded_at >= %(start)s::timestamptz and recorded_at < %(end)s::timestamptz) "
    "or (confirmation_start_at >= %(start)s::timestamptz "
    "and confirmation_start_at < %(end)s::timestamptz)")


def _sensor_expectations() -> tuple[Expectation, ...]:
    """min ≥ lower bound on the hour's minimum, max ≤ upper bound on its maximum: together,
    every sample of the hour lies within the tag's range."""
    out: list[Expectation] = []
    for r in SENSOR_RANGES:
        if r.min_value is not None:
            out.append(between(f"{r.tag_name}_min_{r.unit}", min_value=r.min_value))
        if r.max_value is not None:
            out.append(between(f"{r.tag_name}_max_{r.unit}", max_value=r.max_value))
    return tuple(out)


_MES_REQUIRED = (
    "confirmation_id", "operation_id", "work_order_id", "confirmation_site_code", "line_code",
    "machine_code", "item_code", "confirmation_start_at", "confirmation_end_at", "good_count",
    "scrap_count", "rework_count", "recorded_at",
)
_MES_QUANTITIES = ("good_count", "scrap_count", "rework_count")


SUITES: tuple[Suite, ...] = (
    Suite(
        name="scada_sensor_ranges",
        source_system="scada",
        # warn: an implausible reading flags its site-day; sensor trouble must not hold back
        # the production books (confirmations, movements) that do not depend on it
        severity="warn",
        target=ROW_COUNT_SYSTEMS["scada"],
        key_column="reading_key",
        expectations=_sensor_expectations(),
        touched=(SCADA_TOUCHED,),
        description="Hourly tag minimum and maximum within the tag kind's physical range "
                    "(SENSOR_RANGES); key machine|tag|hour (UTC).",
    ),
    Suite(
        name="mes_confirmation_required_fields",
        source_system="mes",
        severity="error",
        target=ROW_COUNT_SYSTEMS["mes"],
        key_column="confirmation_id",
        expectations=(*(not_null(c) for c in _MES_REQUIRED),
                      *(between(c, min_value=0) for c in _MES_QUANTITIES)),
        touched=(MES_TOUCHED,),
        description="MES confirmations: every required field present (the site as sent: "
                    "confirmation_site_code), piece counts ≥ 0; key confirmation_id.",
    ),
    Suite(
        name="row_counts_vs_history",
        source_system=",".join(ROW_COUNT_SYSTEMS),
        severity="warn",
        target=",".join(ROW_COUNT_SYSTEMS.values()),
        key_column="scope_key",
        expectations=tuple(between(f"{s}_row_count_ratio", *ROW_COUNT_RATIO, source_system=s,
                                   target=relation)
                           for s, relation in ROW_COUNT_SYSTEMS.items()),
        touched=(MES_TOUCHED, SCADA_TOUCHED),
        description="Rows per system × site × production day (MES confirmations, SCADA minute "
                    "samples) over the median of the previous 7 days that have rows; no "
                    "history gives no ratio (passes).",
    ),
)


# --- outcomes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScopeFailure:
    failing_count: int
    sample_keys: tuple[Any, ...]  # up to SAMPLE_KEYS record keys
    sample_values: tuple[Any, ...]  # the checked column's values of those records


@dataclass(frozen=True)
class CheckOutcome:
    """One expectation's result, split by scope."""

    check_name: str
    expectation: Expectation
    source_system: str
    checked_count: int  # rows the expectation looked at (nulls are not range-checked)
    failures: Mapping[Scope, ScopeFailure]

    @property
    def success(self) -> bool:
        return not self.failures

    @property
    def failing_count(self) -> int:
        return sum(f.failing_count for f in self.failures.values())


@dataclass(frozen=True)
class SuiteOutcome:
    suite: Suite
    scopes: tuple[Scope, ...]  # every scope evaluated (sorted)
    checks: tuple[CheckOutcome, ...]
    seconds: float

    @property
    def name(self) -> str:
        return self.suite.name

    @property
    def severity(self) -> Severity:
        return self.suite.severity

    @property
    def success(self) -> bool:
        return all(c.success for c in self.checks)

    @property
    def failing_scopes(self) -> tuple[Scope, ...]:
        return tuple(sorted({s for c in self.checks for s in c.failures}))


# --- running --------------------------------------------------------------------------------


def _sqlalchemy_url(dsn: str) -> str:
    from psycopg.conninfo import conninfo_to_dict
    from sqlalchemy.engine import URL

    params = conninfo_to_dict(dsn)
    url = URL.create(
        "postgresql+psycopg", username=params.pop("user", None),
        password=params.pop("password", None), host=params.pop("host", None),
        port=int(params.pop("port")) if params.get("port") else None,
        database=params.pop("dbname", None), query={k: str(v) for k, v in params.items()},
    )
    return url.render_as_string(hide_password=False)


def _gx_context():
    # GX logs hundreds of INFO lines while importing: keep the task log for the gate's own
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    return gx.get_context(mode="ephemeral", project_config=DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False, progress_bars=ProgressBarsConfig(globally=False),
    ))


def _gx_expectation(spec: Expectation, check_name: str):
    import great_expectations.expectations as gxe

    cls = getattr(gxe, "".join(p.capitalize() for p in spec.type.split("_")))
    return cls(column=spec.column, **spec.kwargs, meta={"check_name": check_name})


def _as_day(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def _check_outcome(suite: Suite, spec: Expectation, result) -> CheckOutcome:
    """Group a GX result's unexpected rows (COMPLETE, with index columns) by scope."""
    check_name = spec.check_name(suite.name)
    if result.exception_info and result.exception_info.get("raised_exception"):
        raise RuntimeError(f"{check_name} could not be evaluated: "
                           f"{result.exception_info.get('exception_message')}")
    details = result.result or {}
    rows = details.get("unexpected_index_list") or []
    unexpected = details.get("unexpected_count") or 0
    if len(rows) != unexpected:  # COMPLETE lists every row; anything else would undercount
        raise RuntimeError(f"{check_name}: GX listed {len(rows)} of {unexpected} failing rows")
    grouped: dict[Scope, list[dict]] = {}
    for row in rows:
        grouped.setdefault((row["site_code"], _as_day(row["production_day"])), []).append(row)
    failures = {}
    for scope, scope_rows in grouped.items():
        scope_rows.sort(key=lambda r: (r[suite.key_column] is None, str(r[suite.key_column])))
        sample = scope_rows[:SAMPLE_KEYS]
        failures[scope] = ScopeFailure(
            failing_count=len(scope_rows),
            sample_keys=tuple(r[suite.key_column] for r in sample),
            sample_values=tuple(r.get(spec.column) for r in sample),
        )
    return CheckOutcome(check_name=check_name, expectation=spec,
                        source_system=spec.source_system or suite.source_system,
                        checked_count=(details.get("element_count") or 0)
                        - (details.get("missing_count") or 0),
                        failures=failures)


def _run_one(context, datasource, suite: Suite, batch_sql: str, scopes,
             batch_rows: int) -> SuiteOutcome:
    import great_expectations as gx

    started = time.perf_counter()
    asset = datasource.add_query_asset(name=suite.name, query=batch_sql)
    batch = asset.add_batch_definition_whole_table(name=f"{suite.name}__all")
    gx_suite = context.suites.add(gx.ExpectationSuite(
        name=suite.name,
        expectations=[_gx_expectation(e, e.check_name(suite.name)) for e in suite.expectations],
    ))
    validation = context.validation_definitions.add(
        gx.ValidationDefinition(name=suite.name, data=batch, suite=gx_suite))
    result = validation.run(result_format={
        "result_format": "COMPLETE",
        "unexpected_index_column_names": suite.index_columns,
        "return_unexpected_index_query": False,
        # on SQL, GX lists at most partial_unexpected_count unexpected rows even for COMPLETE:
        # the batch's size lets it list every failing row, so counts and keys are exact
        "partial_unexpected_count": max(batch_rows, 20),
    })
    by_name = {r.expectation_config.meta["check_name"]: r for r in result.results}
    checks = tuple(_check_outcome(suite, e, by_name[e.check_name(suite.name)])
                   for e in suite.expectations)
    evaluated = {(site, _as_day(day)) for site, day in scopes}
    evaluated.update(s for c in checks for s in c.failures)
    return SuiteOutcome(suite=suite, scopes=tuple(sorted(evaluated)), checks=checks,
                        seconds=time.perf_counter() - started)


def _result_rows(run_id: str, outcome: SuiteOutcome) -> Iterable[tuple]:
    from psycopg.types.json import Jsonb

    for check in outcome.checks:
        for scope in outcome.scopes:
            failure = check.failures.get(scope)
            yield (run_id, check.check_name, "gx", check.source_system,
                   outcome.suite.relation_of(check.expectation),
                   outcome.severity, scope[0], scope[1],
                   failure.failing_count if failure else 0,
                   Jsonb([_jsonable(k) for k in failure.sample_keys] if failure else []))


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def run_suites(dsn: str, run_id: str, start: datetime, end: datetime,
               suites: Sequence[Suite] | None = None) -> list[SuiteOutcome]:
    """Run every suite over the scopes touched by `[start, end)` and record the results.

    Writes one `dq.check_result` row per expectation × evaluated scope (all in one
    transaction) and returns the outcomes; raises nothing for failing data (see
    `raise_for_failures`), only when a suite cannot be evaluated."""
    import psycopg

    from factory_platform.warehouse import ensure_warehouse_once

    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be timezone-aware")
    suites = SUITES if suites is None else tuple(suites)
    ensure_warehouse_once(dsn)
    started = time.perf_counter()
    context = _gx_context()
    # create_temp_table: GX materializes each batch once in a temporary table, instead of
    # running the suite's query again for each of its ~30 metric queries
    datasource = context.data_sources.add_postgres(
        name="warehouse", connection_string=_sqlalchemy_url(dsn), create_temp_table=True)
    outcomes: list[SuiteOutcome] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        params = {"start": start, "end": end}
        for suite in suites:
            batch_sql = psycopg.ClientCursor(conn).mogrify(suite.batch_sql(), params)
            counts = conn.execute(
                f"select site_code, production_day, count(*) from ({batch_sql}) as batch "
                f"group by site_code, production_day"
            ).fetchall()
            scopes = [(site, day) for site, day, _ in counts]
            batch_rows = sum(n for _, _, n in counts)
            outcome = _run_one(context, datasource, suite, batch_sql, scopes, batch_rows)
            log.info("suite %s (%s): %d scopes, %d failing, %.2f s", suite.name, suite.severity,
                     len(outcome.scopes), len(outcome.failing_scopes), outcome.seconds)
            outcomes.append(outcome)
        rows = [row for outcome in outcomes for row in _result_rows(run_id, outcome)]
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(
                "insert into dq.check_result (run_id, check_name, check_kind, source_system,"
                " target, severity, site_code, production_day, failing_count, sample_keys)"
                " values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", rows)
    log.info("quality gate %s: %d suites, %d result rows in %.2f s", run_id, len(outcomes),
             len(rows), time.perf_counter() - started)
    return outcomes


# --- deciding -------------------------------------------------------------------------------


def _scope_text(scope: Scope) -> str:
    return f"{scope[0]} {scope[1].isoformat()}"


def describe_failures(outcome: SuiteOutcome, max_scopes: int = 10) -> str:
    """What failed in a suite, for a task log: each failing expectation with its bounds, its
    failing rows and scopes, and sample keys with their values."""
    failing = outcome.failing_scopes
    more = " …" if len(failing) > max_scopes else ""
    suite = outcome.suite
    lines = [(f"suite {outcome.name} ({outcome.severity}; source {suite.source_system}; "
              f"target {suite.target}; batch {suite.relation}): {len(failing)} of "
              f"{len(outcome.scopes)} scopes failing: "
              f"{', '.join(_scope_text(s) for s in failing[:max_scopes])}{more}")]
    for check in outcome.checks:
        if check.success:
            continue
        scopes = sorted(check.failures)
        lines.append(f"  - {check.check_name}: {check.expectation.describe()}")
        lines.append(f"    {check.failing_count} failing row(s) of {check.checked_count} "
                     f"checked, in {len(scopes)} scope(s)")
        for scope in scopes[:max_scopes]:
            failure = check.failures[scope]
            samples = ", ".join(f"{k} ({v})" if v is not None else str(k)
                                for k, v in zip(failure.sample_keys, failure.sample_values))
            lines.append(f"      {_scope_text(scope)}: {failure.failing_count} row(s); "
                         f"sample keys: {samples}")
        if len(scopes) > max_scopes:
            lines.append(f"      … and {len(scopes) - max_scopes} more scope(s)")
    return "\n".join(lines)


def raise_for_failures(outcomes: Sequence[SuiteOutcome]) -> None:
    """Raise QualityGateFailed when an error-severity suite failed; log warn-severity ones."""
    errors = []
    for outcome in outcomes:
        if outcome.success:
            continue
        if outcome.severity == "warn":
            log.warning("quality warning (scopes flagged, still published)\n%s",
                        describe_failures(outcome))
        else:
            errors.append(outcome)
    if errors:
        blocked = sorted({s for o in errors for s in o.failing_scopes})
        raise QualityGateFailed(
            f"{len(errors)} error-severity suite(s) failed; {len(blocked)} scope(s) blocked "
            f"from publishing (see dq.scope_status):\n"
            + "\n".join(describe_failures(o) for o in errors))


def summarize(outcomes: Sequence[SuiteOutcome]) -> dict[str, Any]:
    """A small JSON-able summary (for XCom): per suite its scopes and failing checks."""
    def scopes(items) -> list[str]:
        return [_scope_text(s) for s in sorted(items)]

    blocked = {s for o in outcomes if o.severity == "error" for s in o.failing_scopes}
    flagged = {s for o in outcomes if o.severity == "warn" for s in o.failing_scopes} - blocked
    return {
        "suites": {
            o.name: {"severity": o.severity, "success": o.success, "scopes": len(o.scopes),
                     "failing_scopes": scopes(o.failing_scopes),
                     "failing_checks": {c.check_name: c.failing_count
                                        for c in o.checks if not c.success},
                     "seconds": round(o.seconds, 3)}
            for o in outcomes
        },
        "blocked_scopes": scopes(blocked),
        "flagged_scopes": scopes(flagged),
    }


def gx_quality_gate(dsn: str, run_id: str, start: datetime, end: datetime,
                    suites: Sequence[Suite] | None = None) -> dict[str, Any]:
    """Run the suites, record their results, fail on an error-severity failure (the Airflow
    task fails with QualityGateFailed), and return a summary for XCom otherwise.

    Once the results are recorded — failing or not — the step is marked complete for the run
    (`dq.gate_step`, step `gx_gate`); a suite that cannot be evaluated (an exception) leaves it
    unmarked, and `quality_gate` then refuses to pass the run (checked.close_gate)."""
    from factory_platform.quality.checked import clear_step, mark_step_done
    from factory_platform.warehouse import ensure_warehouse_once

    ensure_warehouse_once(dsn)
    clear_step(dsn, run_id, "gx_gate")
    outcomes = run_suites(dsn, run_id, start, end, suites)
    summary = summarize(outcomes)
    mark_step_done(dsn, run_id, "gx_gate", {
        "suites": len(outcomes), "blocked_scopes": len(summary["blocked_scopes"]),
        "flagged_scopes": len(summary["flagged_scopes"])})
    log.info("quality gate summary: %s", json.dumps(summary))
    raise_for_failures(outcomes)
    return summary
