"""Event-driven extraction (#15 item 2), without a scheduler: the change-feed triggers against
the served test plant's MES and a real inbox folder, the DAGs' schedules, and the window an
asset-triggered run loads. The scheduler's path (a new MES record starts `extract_mes`) is
tests/event_driven/test_event_driven_run.py."""

from __future__ import annotations

import asyncio
import os
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from factory_platform.change_triggers import (
    ApiChangeTrigger,
    InboxWatch,
    change_feed_uri,
)
from factory_platform.dag_factory import build_extract_dags, event_window, run_window
from factory_platform.sources import Source, all_sources, get_source

# --- the window of a run without a data interval -------------------------------------------


def test_an_asset_triggered_run_loads_the_elapsed_part_of_its_schedule_interval():
    run_after = datetime(2026, 12, 3, 10, 22, 37, 123456, tzinfo=UTC)
    context = {"params": {}, "dag_run": SimpleNamespace(run_after=run_after)}  # no interval
    assert run_window(context, "*/15 * * * *") == (datetime(2026, 12, 3, 10, 15, tzinfo=UTC),
                                                   run_after)
    assert event_window("0 * * * *", run_after)[0] == datetime(2026, 12, 3, 10, tzinfo=UTC)
    on_the_tick = datetime(2026, 12, 3, 10, 15, tzinfo=UTC)  # never an empty window
    assert event_window("*/15 * * * *", on_the_tick) == (on_the_tick - timedelta(minutes=15),
                                                         on_the_tick)
    scheduled = {**context, "data_interval_start": on_the_tick - timedelta(minutes=15),
                 "data_interval_end": on_the_tick}
    assert run_window(scheduled, "*/15 * * * *") == (on_the_tick - timedelta(minutes=15),
                                                     on_the_tick)
    reload = {**context, "params": {"reload_start": "2026-10-20T00:00:00+00:00",
                                    "reload_end": "2026-10-21T00:00:00+00:00"}}
    assert run_window(reload, "*/15 * * * *") == (datetime(2026, 10, 20, tzinfo=UTC),
                                                  datetime(2026, 10, 21, tzinfo=UTC))


# --- the DAGs' schedules ------------------------------------------------------------------------


def test_sources_with_a_change_feed_run_on_their_cron_or_its_asset():
    from airflow.timetables.assets import AssetOrTimeSchedule
    from airflow.timetables.interval import CronDataIntervalTimetable

    declared = {system: source.change_feed for system, source in all_sources().items()}
    assert {s: declared[s] for s in ("mes", "qms", "wms", "scada", "ems", "plm", "erp", "eam")} \
        == {"mes": "api", "qms": "api", "wms": "inbox", "scada": "inbox", "ems": "inbox",
            "plm": "inbox", "erp": None, "eam": None}
    outlets = set()
    for dag_id, dag in build_extract_dags().items():
        source = get_source(dag_id.removeprefix("extract_"))
        outlets |= {outlet.uri for task in dag.tasks for outlet in task.outlets}
        if source.change_feed is None:
            assert type(dag.timetable) is CronDataIntervalTimetable, dag_id
            continue
        timetable = dag.timetable
        assert isinstance(timetable, AssetOrTimeSchedule), dag_id
        assert timetable.timetable.serialize()["expression"] == source.schedule_cron
        (asset,) = [asset for _, asset in timetable.asset_condition.iter_assets()]
        assert asset.uri == change_feed_uri(source.system)
        (watcher,) = asset.watchers
        classpath = watcher.trigger["classpath"]
        assert classpath == ("factory_platform.change_triggers."
                             + ("ApiChangeTrigger" if source.change_feed == "api"
                                else "InboxChangeTrigger"))
        # no secret in what Airflow stores and logs of a trigger
        assert set(watcher.trigger["kwargs"]) == {"system", "poll_seconds", "rearm_seconds"}
    # the DAGs never emit their own change-feed asset: a run cannot start itself
    assert not any(uri.startswith("x-change-feed://") for uri in outlets)


def test_a_change_feed_must_fit_the_interface():
    source = get_source("erp")
    with pytest.raises(ValueError, match="change_feed 'api' does not fit interface 'sql'"):
        Source(**{**source.__dict__, "change_feed": "api"})


# --- the inbox trigger --------------------------------------------------------------------------


def test_a_settled_file_landing_in_the_inbox_is_signalled_once(tmp_path: Path):
    source = Source(**{**get_source("wms").__dict__, "settle_time": timedelta(seconds=30),
                       "completion_marker": "{name}.done"})
    watch = InboxWatch(source, tmp_path)
    poll = lambda: asyncio.run(watch.poll())
    name = "WMS_MOVEMENTS_ERF_20261020T0600Z.csv"
    landed = tmp_path / name
    landed.write_bytes(b"header\n")
    (tmp_path / "notes.txt").write_bytes(b"fits no entity")
    old = time.time() - 60
    os.utime(tmp_path / "notes.txt", (old, old))
    assert poll() is None  # still being written (changed just now)
    os.utime(landed, (old, old))
    change = poll()
    assert (change["files"], change["file_count"]) == ([name], 1)
    assert poll() is None  # signalled once
    landed.write_bytes(b"header\nrow\n")  # written again: a new delivery, once settled
    os.utime(landed, (old + 1, old + 1))
    assert poll()["files"] == [name]
    fresh = tmp_path / "WMS_CYCLECOUNT_ERF_20261020.csv"
    fresh.write_bytes(b"header\n")
    assert poll() is None
    (tmp_path / f"{fresh.name}.done").write_bytes(b"")  # its completion marker: at once
    assert poll()["files"] == [fresh.name]
    (tmp_path / "WMS_MOVEMENTS_ERF_20261020T0700Z.csv").symlink_to("/etc/passwd")
    assert poll()["files"] == ["WMS_MOVEMENTS_ERF_20261020T0700Z.csv"]  # set aside at once
    landed.unlink()
    assert poll() is None
    with pytest.raises(FileNotFoundError, match="is the plant's share mounted"):
        asyncio.run(InboxWatch(source, tmp_path / "not-mounted").poll())


@pytest.mark.parametrize(("system", "name"), [
    ("wms", "WMS_MOVEMENTS_ERF_{hour}00Z.csv"), ("scada", "SCADA_TAGS_ERF_{hour}00Z.csv"),
    ("ems", "EMS_READINGS_ERF_{hour}00Z.csv"), ("plm", "PLM_EXPORT_ERF_{day}.xml")])
def test_a_file_that_just_landed_is_the_event_runs_own_not_late(system, name, tmp_path,
                                                               monkeypatch):
    """The run its signal starts takes it (the extraction's own file plan, over the window
    `run_window` gives an asset-triggered run), without a `file_late` incident."""
    import json

    from factory_platform.extract.clients import Window
    from factory_platform.extract.files import plan_files

    source = get_source(system)
    monkeypatch.setenv(f"AIRFLOW_CONN_{source.conn_id.upper()}",
                       json.dumps({"conn_type": "fs", "extra": {"path": str(tmp_path)}}))
    now = datetime.now(UTC)
    last = now - timedelta(hours=1)  # the last complete hour (PLM: today's export)
    landed = tmp_path / name.format(hour=f"{last:%Y%m%dT%H}", day=f"{now:%Y%m%d}")
    landed.write_bytes(b"x\n")
    settled = time.time() - source.settle_time.total_seconds() - 1
    os.utime(landed, (settled, settled))
    assert asyncio.run(InboxWatch(source, tmp_path).poll())["files"] == [landed.name]
    start, end = event_window(source.schedule_cron, now)
    window = Window(start=start - source.lookback, end=end, interval_start=start,
                    interval_end=end)
    entity = next(e for e in source.entities if re.fullmatch(e.endpoint, landed.name))
    plan = plan_files(source, entity, window)
    assert [f.name for f in plan.chosen] == [landed.name]
    assert plan.late == {} and plan.incidents == []


def test_the_deployments_triggerer_sees_every_watched_inbox(project_root):
    """docker-compose: the triggerer mounts the share holding each watched inbox."""
    import json

    import yaml

    compose = yaml.safe_load((project_root / "docker-compose.yml").read_text())
    triggerer = compose["services"]["airflow-triggerer"]
    mounts = [v.split(":")[1] for v in triggerer["volumes"]]
    environment = compose["x-airflow-common"]["environment"]
    for source in all_sources().values():
        if source.change_feed == "inbox":
            inbox = json.loads(environment[f"AIRFLOW_CONN_{source.conn_id.upper()}"])
            assert any(inbox["extra"]["path"].startswith(f"{m}/") for m in mounts), source.system


# --- the API trigger against the served plant ---------------------------------------------------


class Events:
    """A trigger's `run()` in the background, collecting what it yields."""

    def __init__(self, trigger) -> None:
        self.trigger = trigger
        self.seen: list[tuple[float, dict]] = []

    async def _consume(self) -> None:
        async for event in self.trigger.run():
            self.seen.append((time.monotonic(), event.payload))

    async def __aenter__(self):
        self.task = asyncio.create_task(self._consume())
        return self

    async def __aexit__(self, *exc) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    async def until(self, count: int, timeout_s: float = 20) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.seen) < count:
            assert time.monotonic() < deadline, f"{len(self.seen)} events, waited for {count}"
            await asyncio.sleep(0.05)


def test_a_mes_record_past_the_high_water_mark_is_signalled_once_per_change(
        plant, mes_marks, capfd):
    """One signal per change: after it only records updated since the signal count (what came
    before is the started run's to load); when the marks have not passed the signal after the
    rearm time (that run failed), the entity is asked from its mark again."""
    entities = [e.name for e in get_source("mes").entities]
    beyond = plant.end + timedelta(days=1)  # the served world ends before: nothing newer
    mes_marks(dict.fromkeys(entities, beyond))
    trigger = ApiChangeTrigger(system="mes", poll_seconds=0.2, rearm_seconds=3)

    async def scenario():
        async with Events(trigger) as events:
            await asyncio.sleep(1.5)
            assert events.seen == []
            mes_marks({"confirmations": plant.end - timedelta(hours=6)})  # not loaded yet
            await events.until(1)
            first = events.seen[0][1]
            assert first["system"] == "mes" and first["entities"] == ["confirmations"]
            await asyncio.sleep(1)  # the run it started has not loaded yet: not again
            assert len(events.seen) == 1
            await events.until(2)  # no load after the rearm time: signalled again
            # measured on the trigger's own clock (whole seconds): the wall time between the
            # two events also holds the first poll's probes, so it may be shorter than 3 s
            second = events.seen[1][1]
            assert (datetime.fromisoformat(second["changed_before"])
                    - datetime.fromisoformat(first["changed_before"])) >= timedelta(seconds=3)
            assert second["entities"] == ["confirmations"]
            mes_marks(dict.fromkeys(entities, datetime.now(UTC) + timedelta(minutes=1)))
            settled = len(events.seen)
            await asyncio.sleep(1.5)  # loaded past the signal, nothing newer: quiet
            assert len(events.seen) == settled
            return events.seen

    seen = asyncio.run(scenario())
    logged = capfd.readouterr()
    assert plant.api_key not in logged.out + logged.err + repr(seen) + repr(trigger.serialize())


def test_an_unanswering_api_is_logged_once_without_its_key(plant, mes_marks, monkeypatch,
                                                           capfd):
    mes_marks({"confirmations": plant.end - timedelta(hours=6)})
    port = int(plant.mes_url.rsplit(":", 1)[1]) + 5  # nothing listens there
    closed = f"http://mes:{plant.api_key}@127.0.0.1:{port}"
    monkeypatch.setenv("AIRFLOW_CONN_MES_API", closed)
    trigger = ApiChangeTrigger(system="mes", poll_seconds=0.1)

    async def scenario():
        async with Events(trigger) as events:
            await asyncio.sleep(1.5)
            assert events.seen == []

    asyncio.run(scenario())  # ~15 polls
    logged = capfd.readouterr()
    warnings = [line for line in logged.out.splitlines() if "no answer" in line]
    assert len(warnings) == 1 and "ConnectError" in warnings[0], warnings
    assert plant.api_key not in logged.out + logged.err
