"""One Airflow task per dbt model (seed, snapshot) of transform_dbt, reporting what the run's
single `dbt build` did with it.

transform_dbt builds in one dbt process: Cosmos' watcher producer (`dbt.dbt_producer_watcher`)
runs `dbt build` over the run's selection and pushes, as each node finishes, its status and its
dbt event (timing, message) to XCom. Cosmos' own consumers (sensors) do not fit a selection that
changes per run: a model the run does not build has no status, and the synchronous sensor pokes
for it until its timeout, the deferrable one needs the triggerer and then reports success; a
retry re-runs dbt for the model, a second dbt process. And Cosmos' watcher mode runs a model's
tests in separate test tasks (TestBehavior.AFTER_EACH: two tasks per model) or not at all.

Cosmos' producer pushes what its log parser learns — each node's status, several events per
node, each model's compiled SQL — as XComs while dbt runs, one Execution API call each, for
consumers that wait on them: ~900 calls for a whole build, and with Cosmos' "reliable retry"
an Airflow Variable holding every XCom so far rewritten at each one (each push also holds up
the reading of dbt's log). Our node tasks run after the producer,
so nothing waits on the stream: `BufferedDbtProducer` gives the parser a stand-in task instance
that keeps the values in memory (so no Variable backup of them either) and, when dbt ends
(failed or not), pushes one small report per node it reached (`node_reports`: the node's status
and that of every data test on it, dbt's message for what did not pass) — which tests
are on which node, `data_interval` worked out once for the run from the manifest it reads
anyway (`tests_by_node`). ~100 reports of a few hundred bytes: before, each of ~100 node tasks
read every node's results and the whole test map (~160 KB of JSON each, through the Execution
API).

`DbtNodeResult` runs after the producer, in the triggerer (`NodeResultTrigger`; under
`dag.test()`, its `execute`): it reads its node's report, logs it (with dbt's message for a
failure), and ends
- success: dbt built the node and every test on it passed (or warned);
- failed: dbt failed the node, skipped it because something upstream failed, or a test on it
  failed — the log names the test and dbt's message; no retry changes that (the data is what it
  is until the next run), so it fails without retrying;
- skipped: the run did not build it — not in this run's selection (nothing it reads changed:
  after a build that succeeded the producer skips these tasks itself, so they never start), or
  the build failed before reaching it (the producer's log says why).
No task here starts dbt.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from airflow.sdk import BaseOperator
from airflow.triggers.base import (
    BaseTrigger,
    StartTriggerArgs,
    TaskFailedEvent,
    TaskSkippedEvent,
    TaskSuccessEvent,
)
from cosmos.operators._watcher.state import get_dbt_event_xcom_key, get_status_xcom_key
from cosmos.operators.watcher import DbtProducerWatcherOperator

log = logging.getLogger(__name__)

PASSED = {"success", "pass", "warn"}
# dbt's own statuses are success, error, fail, warn, pass, skipped, …; "failed" is Cosmos' rewrite
# of dbt's "skipped" for a node it skipped because something upstream of it failed
UPSTREAM_FAILED = "failed"
# the XCom (of data_interval) holding `tests_by_node` for the run
TESTS_XCOM_KEY = "tests_by_node"
# the XComs (of the producer) holding what the run's build did with each node: prefix + unique id
NODE_REPORT_XCOM_PREFIX = "dbt_node_report:"


def tests_by_node(manifest: dict) -> dict[str, list[str]]:
    """node → the data tests on it, in name order: those its yml attaches to it (a
    relationships test belongs to the model it is declared on, not to the one it refers to),
    and the singular tests (no attached node) that read it. Not the unit tests: transform_dbt's
    builds leave them out (`transform.PRODUCTION_BUILD_FLAGS`). Nodes without tests are left
    out."""
    nodes = manifest.get("nodes", {})
    owned: dict[str, list[str]] = {}
    for parent, children in manifest.get("child_map", {}).items():
        tests = sorted(
            child for child in children if child.startswith("test.")
            and (nodes.get(child, {}).get("attached_node") or parent) == parent)
        if tests:
            owned[parent] = tests
    return owned


class NodeResultBuffer:
    """What Cosmos' log parser pushes during one build, kept in memory: it stands in for the
    producer's task instance (the parser calls xcom_push and, for dbt's start-up events,
    xcom_pull)."""

    def __init__(self) -> None:
        self.values: dict[str, object] = {}

    def xcom_push(self, key: str, value, **_) -> None:
        self.values[key] = value

    def xcom_pull(self, task_ids=None, key: str = "return_value", **_):
        return self.values.get(key)

    def results(self) -> dict[str, object]:
        """Under Cosmos' keys: every node's status, and dbt's event (its message) for a node
        that did not pass — what `node_reports` reads; not the compiled SQL or start-up
        events."""
        results: dict[str, object] = {}
        for key, value in self.values.items():
            if not key.endswith("_status"):
                continue
            results[key] = value
            status = value.get("status") if isinstance(value, dict) else value
            event_key = key.removesuffix("_status") + "_dbt_event"
            if status not in PASSED and event_key in self.values:
                results[event_key] = self.values[event_key]
        return results


class BufferedDbtProducer(DbtProducerWatcherOperator):
    """Cosmos' watcher producer whose log parser writes to a `NodeResultBuffer`; when dbt ends
    each node it reached gets its report in XCom (module docstring). `transform._wire_watchers`
    turns the producer Cosmos made into one (Cosmos has no option to choose the producer's
    class)."""

    def start_node_results(self) -> NodeResultBuffer:
        self._node_results = NodeResultBuffer()
        return self._node_results

    def _make_parse_callable(self):
        parse = super()._make_parse_callable()
        context = {"ti": self._node_results}

        def buffered(line: str, _extra_kwargs=None) -> None:
            # no project_dir: the parser would read each model's compiled SQL for the push
            parse(line, {"context": context})

        return buffered

    # the task that pushed `tests_by_node` for the run
    tests_task_id = "data_interval"

    def execute(self, context, **kwargs):
        buffer = self.start_node_results()
        try:
            result = super().execute(context, **kwargs)
        finally:  # failed or not, each node dbt reached gets its report
            reached = self.push_node_reports(context["ti"], buffer)
        self.skip_unselected(reached)
        return result

    def push_node_reports(self, ti, buffer: NodeResultBuffer) -> set[str]:
        """One XCom per node the build reached (`node_reports`); returns their unique ids."""
        tests = ti.xcom_pull(task_ids=self.tests_task_id, key=TESTS_XCOM_KEY,
                             map_indexes=-1) or {}
        nodes = [t.unique_id for t in self.dag.tasks if isinstance(t, DbtNodeResult)]
        reports = node_reports(buffer.results(), tests, nodes)
        for unique_id, report in reports.items():
            ti.xcom_push(key=node_report_key(unique_id), value=report)
        return set(reports)

    def skip_unselected(self, reached: set[str]) -> None:
        """After a build that succeeded: the node tasks of what it did not reach — outside the
        run's selection, nothing they read changed — are skipped here, in one Execution API
        call, instead of each starting a trigger to find its report missing. In the latency
        bench ~40 of ~100 per run: their triggers, state changes and XCom reads took the
        triggerer, scheduler and API server's CPU exactly while the gate checks ran. After a
        failed build they still run: each says whether the build reached it."""
        from airflow.sdk.exceptions import DownstreamTasksSkipped

        unselected = sorted(t.task_id for t in self.dag.tasks
                            if isinstance(t, DbtNodeResult) and t.unique_id not in reached)
        if unselected:
            log.info("not in this run's selection (nothing they read changed since the last "
                     "successful run), skipped: %s", ", ".join(unselected))
            raise DownstreamTasksSkipped(tasks=unselected)


@dataclass(frozen=True)
class NodeOutcome:
    """How a node task ends: `state` (success, failed, skipped), why, and its log lines."""

    state: str
    message: str
    lines: tuple[str, ...]


def node_report_key(unique_id: str) -> str:
    """The producer's XCom holding what its build did with `unique_id` (`node_reports`)."""
    return f"{NODE_REPORT_XCOM_PREFIX}{unique_id}"


def node_reports(results: dict, tests: dict[str, list[str]],
                 nodes: list[str]) -> dict[str, dict]:
    """What the build did with each of `nodes` (models, seeds, snapshots) it reached, from the
    parser's `results` (Cosmos' keys) and the tests on each node: {unique_id: {"status",
    "message", "tests": [[test, status or None, message], …]}} — dbt's message only for what
    did not pass. A few hundred bytes per node: each node task reads its own report, not
    every node's results."""

    def status_of(node: str) -> str | None:
        result = results.get(get_status_xcom_key(node)) or {}
        return result.get("status") if isinstance(result, dict) else result

    def message_of(node: str, status: str | None) -> str:
        if status is None or status in PASSED | {"skipped", UPSTREAM_FAILED}:
            return ""
        return (results.get(get_dbt_event_xcom_key(node)) or {}).get("msg") or ""

    reports = {}
    for unique_id in nodes:
        status = status_of(unique_id)
        if status is None:
            continue
        reports[unique_id] = {
            "status": status, "message": message_of(unique_id, status),
            "tests": [[test, status_of(test), message_of(test, status_of(test))]
                      for test in tests.get(unique_id, [])]}
    return reports


def node_outcome(unique_id: str, report: dict | None, producer_task_id: str,
                 producer_state: Callable[[], str | None]) -> NodeOutcome:
    """How the task of `unique_id` ends, from the producer's report on it (`node_reports`;
    None: the build did not reach it); `producer_state` is asked only then."""
    if report is None:
        producer = producer_state()
        if producer == "success":
            return NodeOutcome("skipped", f"{unique_id} is not in this run's selection: nothing "
                               f"it reads changed since the last successful run (the "
                               f"producer's --select)", ())
        return NodeOutcome("skipped", f"{unique_id} was not built: the run's dbt build "
                           f"({producer_task_id}, {producer}) ended before reaching it; its log "
                           f"says why", ())
    status, tests = report["status"], report["tests"]
    lines = [f"dbt {unique_id}: {status} {report['message']}"]
    failing = []
    for test, test_status, message in tests:
        if test_status == UPSTREAM_FAILED:
            lines.append(f"  test {test}: not run, something it reads failed")
            continue
        lines.append(f"  test {test}: {test_status or 'not run'} {message}")
        if test_status is not None and test_status not in PASSED | {"skipped"}:
            failing.append(f"{test} ({test_status}: {message or 'see the producer log'})")
    if status == UPSTREAM_FAILED:
        return NodeOutcome("failed", f"dbt did not build {unique_id}: something upstream of it "
                           f"failed" + (f" — {len(failing)} test(s) on it: " + "; ".join(failing)
                                        if failing else " (the producer log names it)"),
                           tuple(lines))
    if status not in PASSED:
        return NodeOutcome("failed", f"dbt {status} {unique_id}: "
                           f"{report['message'] or 'see the producer log'}", tuple(lines))
    if failing:
        return NodeOutcome("failed", f"{len(failing)} test(s) on {unique_id} failed: "
                           + "; ".join(failing), tuple(lines))
    return NodeOutcome("success", f"{status}; {len(tests)} test(s) on it", tuple(lines))


def producer_state(dag_id: str, run_id: str, producer_task_id: str) -> str | None:
    """The producer's state in the run (through the Execution API: a worker's or the
    triggerer's)."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    states = RuntimeTaskInstance.get_task_states(dag_id=dag_id, task_ids=[producer_task_id],
                                                 run_ids=[run_id])
    state = states.get(run_id, {}).get(producer_task_id)
    return None if state is None else str(state)


def pull_outcome(ti, unique_id: str, producer_task_id: str) -> NodeOutcome:
    """`node_outcome` from the producer's report on the node, pulled by `ti` (a worker's or
    the triggerer's task instance)."""
    # map_indexes given: one value (GetXCom) — the triggerer answers no sequence slices
    report = ti.xcom_pull(task_ids=producer_task_id, key=node_report_key(unique_id),
                          map_indexes=-1)
    return node_outcome(unique_id, report, producer_task_id,
                        lambda: producer_state(ti.dag_id, ti.run_id, producer_task_id))


class NodeResultTrigger(BaseTrigger):
    """A `DbtNodeResult` task run in the triggerer: reads the node's outcome (`pull_outcome`,
    in a thread: the Execution API calls block), writes its lines to the task's log and ends
    the task with it — success, failed (no retry: the data is what it is until the next run)
    or skipped — without a worker."""

    def __init__(self, unique_id: str, producer_task_id: str) -> None:
        super().__init__()
        self.unique_id = unique_id
        self.producer_task_id = producer_task_id

    def serialize(self) -> tuple[str, dict]:
        return (f"{__name__}.NodeResultTrigger",
                {"unique_id": self.unique_id, "producer_task_id": self.producer_task_id})

    async def run(self):
        from asgiref.sync import sync_to_async

        outcome = await sync_to_async(pull_outcome)(
            self.task_instance, self.unique_id, self.producer_task_id)
        for line in outcome.lines:
            self.log.info("%s", line)
        if outcome.state == "success":
            self.log.info("%s", outcome.message)
            yield TaskSuccessEvent(xcoms={"return_value": outcome.message})
        elif outcome.state == "skipped":
            self.log.info("%s", outcome.message)
            yield TaskSkippedEvent()
        else:
            self.log.error("%s", outcome.message)
            yield TaskFailedEvent()


class DbtNodeResult(BaseOperator):
    """What the run's `dbt build` did with one dbt node, and the tests on it (module docstring).

    It starts in the triggerer (`NodeResultTrigger`): no worker process per model, so the ~100
    node tasks of a run end within seconds of the producer, and the run — one at a time — does
    not hold back the next. `dag.test()` runs `execute` instead, which decides the same."""

    ui_color = "#e6f0e6"
    start_from_trigger = True

    def __init__(self, *, unique_id: str, producer_task_id: str = "dbt.dbt_producer_watcher",
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.unique_id = unique_id
        self.producer_task_id = producer_task_id  # Cosmos sets the group-qualified id
        self.start_trigger_args = StartTriggerArgs(
            trigger_cls=f"{__name__}.NodeResultTrigger",
            trigger_kwargs={"unique_id": unique_id, "producer_task_id": producer_task_id},
            next_method="execute_complete", next_kwargs=None, timeout=None)

    def execute(self, context) -> str:
        from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

        outcome = pull_outcome(context["ti"], self.unique_id, self.producer_task_id)
        for line in outcome.lines:
            log.info("%s", line)
        if outcome.state == "skipped":
            raise AirflowSkipException(outcome.message)
        if outcome.state == "failed":
            raise AirflowFailException(outcome.message)
        return outcome.message

    def execute_complete(self, context, event=None) -> str:
        """The trigger ends the task itself; should it ever hand back, decide on a worker."""
        return self.execute(context)
