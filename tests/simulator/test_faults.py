"""Delivery faults (README "Faults"): files written in place, late, re-delivered broken; API
answers that stall, come back empty, repeat their cursor or are cut off. Each is transient or
repairable, deterministic from the seed, off by default, and journaled like the defects."""

from __future__ import annotations

import hashlib
import http.client
import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _feed import all_rows
from _http import call
from plant_sim.config import load_config
from plant_sim.drops import read_index
from plant_sim.faults import parse_spec, plan_deliveries
from plant_sim.runtime import Runtime
from plant_sim.systems.mes import ENTITIES as MES
from plant_sim.timeutil import iso
from plant_sim.world import generate_world

SEED = 7  # the small world's seed (conftest)


def _wait(cond: Callable[[], Any], timeout: float = 30.0, step: float = 0.02) -> Any:
    """Poll `cond` until it returns something truthy (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(step)


@pytest.fixture()
def serve(small_world: Path, tmp_path: Path) -> Iterator[Callable[..., Runtime]]:
    """`serve(faults, **kw)`: the small world with these faults, inbox in tmp, stopped after."""
    started: list[Runtime] = []

    def make(faults: dict[str, dict[str, Any]], **kw: Any) -> Runtime:
        kw.setdefault("inbox", tmp_path / "inbox")
        rt = Runtime(
            small_world, mes_port=0, qms_port=0, api_key="k3y", faults=faults, **kw
        )
        started.append(rt)
        rt.start()
        return rt

    yield make
    for rt in started:
        rt.stop()


# ---- off by default, deterministic -------------------------------------------------------


def test_no_faults_plan_is_todays_delivery(small_world: Path) -> None:
    index = read_index(small_world)
    plan = plan_deliveries(index, {}, SEED)
    assert [(d.at, d.system, d.name, d.mode, d.late) for d in plan] == [
        (at, s, n, "normal", False) for at, s, n in index
    ]


def test_fault_plan_is_seeded_and_counts_are_exact(small_world: Path) -> None:
    index = read_index(small_world)
    n_scada = sum(1 for _a, s, _n in index if s == "scada")  # 146
    spec = parse_spec(
        {
            "scada": {"partial_rate": 0.1, "late_rate": 0.05, "broken_rate": 0.02},
            "ems": {"late_rate": 1.0, "late_max": 3, "late_hours": 30},
        }
    )
    a, b = plan_deliveries(index, spec, SEED), plan_deliveries(index, spec, SEED)
    assert a == b
    partial = [d.name for d in a if d.mode == "partial"]
    late = [d for d in a if d.late and d.system == "scada"]
    broken = [d for d in a if d.broken]
    assert len(partial) in (int(n_scada * 0.1), int(n_scada * 0.1) + 1)
    assert len(late) in (int(n_scada * 0.05), int(n_scada * 0.05) + 1)
    assert len(broken) in (int(n_scada * 0.02), int(n_scada * 0.02) + 1)
    ems_late = [d for d in a if d.system == "ems" and d.late]
    assert len(ems_late) == 3 and all(d.at - d.due == 30 * 3600 for d in ems_late)
    # every file still delivered exactly once (plus its broken re-delivery)
    assert sorted((d.system, d.name) for d in a if not d.broken) == sorted(
        (s, n) for _a, s, n in index
    )
    other = plan_deliveries(index, spec, SEED + 1)
    assert partial != [d.name for d in other if d.mode == "partial"]


def test_config_faults_tables(small_config_path: Path, tmp_path: Path) -> None:
    text = small_config_path.read_text(encoding="utf-8")
    faulty = tmp_path / "faulty.toml"
    faulty.write_text(
        text + "\n[faults.plm]\npartial_rate = 1.0\n\n[faults.mes]\nempty_rate = 1.0\n"
        "empty_max = 2\n",
        encoding="utf-8",
    )
    cfg = load_config(faulty)
    assert cfg.faults == {
        "plm": {"partial_rate": 1.0},
        "mes": {"empty_max": 2, "empty_rate": 1.0},
    }
    generate_world(cfg, SEED, tmp_path / "f")
    generate_world(load_config(small_config_path), SEED, tmp_path / "p")

    def digests(root: Path) -> dict[str, str]:
        return {
            str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    f, p = digests(tmp_path / "f"), digests(tmp_path / "p")
    # faults change no generated file (only the manifest and the config hash in truth.world)
    differ = {k for k in f.keys() | p.keys() if f.get(k) != p.get(k)}
    assert differ == {"world.json", "truth/world.csv"}
    manifest = json.loads((tmp_path / "f" / "world.json").read_text(encoding="utf-8"))
    assert manifest["faults"] == cfg.faults
    assert "faults" not in json.loads((tmp_path / "p" / "world.json").read_text())
    rt = Runtime(tmp_path / "f", mes_port=0, qms_port=0, inbox=tmp_path / "i")
    assert {d.mode for d in rt.dropper.schedule if d.system == "plm"} == {"partial"}
    off = Runtime(tmp_path / "f", mes_port=0, qms_port=0, faults={})
    assert {d.mode for d in off.dropper.schedule} == {"normal"}
    for bad in (
        {"xyz": {"late_rate": 1}},
        {"mes": {"late_rate": 1}},  # a file fault on an API
        {"wms": {"stall_rate": 1}},  # an API fault on files
        {"scada": {"partial_rate": 2}},
        {"scada": {"broken_mode": "shredded"}},
    ):
        with pytest.raises(ValueError):
            parse_spec(bad)


# ---- files --------------------------------------------------------------------------------


def test_partial_files_grow_in_place_and_end_identical(
    serve, small_world: Path
) -> None:
    rt = serve(
        {
            "plm": {
                "partial_rate": 1.0,
                "partial_chunks": 3,
                "partial_chunk_seconds": 0.4,
            }
        }
    )
    inbox = rt.inbox / "plm"
    names = sorted(n for _a, s, n in read_index(small_world) if s == "plm")
    final = {n: (small_world / "drops" / "plm" / n).read_bytes() for n in names}
    # start() delivered the first chunk of each, under the final name, no hidden temp name
    assert sorted(p.name for p in inbox.iterdir()) == names
    health = call(f"{rt.mes_url}/health", key=None)[2]
    assert health["drops"]["writing"] == 3 and health["drops"]["complete"] is False
    seen: dict[str, list[int]] = {n: [] for n in names}

    def complete() -> bool:
        for n in names:
            seen[n].append((inbox / n).stat().st_size)
        return rt.dropper.status()["writing"] == 0

    _wait(complete)
    for n in names:
        sizes = seen[n]
        assert sizes == sorted(sizes)  # only ever grows
        assert 0 < sizes[0] < len(final[n])  # a reader saw it incomplete
        assert (inbox / n).read_bytes() == final[n]  # and it ends byte-identical
    assert call(f"{rt.mes_url}/health", key=None)[2]["drops"]["complete"] is True
    rows = rt.journal.snapshot()
    assert [(r["kind"], r["system"], r["file_name"]) for r in rows] == [
        ("file_partial", "plm", n) for n in names
    ]
    assert rt.journal.counts() == {"file_partial": 3}


def test_late_file_appears_only_after_its_delay(serve, small_world: Path) -> None:
    index = read_index(small_world)
    ems = [(at, n) for at, s, n in index if s == "ems"]
    (due0, late0), (due1, late1) = ems[0], ems[1]  # late_max 2 → the first two files
    rt = serve(
        {"ems": {"late_rate": 1.0, "late_max": 2, "late_hours": 30}},
        clock_mode="live",
        speed=0.0,
        start=iso(due1 + 3600),
    )
    inbox = rt.inbox / "ems"
    assert not (inbox / late0).exists() and not (inbox / late1).exists()
    assert (inbox / ems[2][1]).exists()  # an on-time file due by then is there
    rt.clock.start = due0 + 30 * 3600 - 1
    rt.dropper.tick()
    assert not (inbox / late0).exists()
    assert rt.journal.counts() == {}
    rt.clock.start = due0 + 30 * 3600
    rt.dropper.tick()
    assert (inbox / late0).read_bytes() == (
        small_world / "drops" / "ems" / late0
    ).read_bytes()
    assert not (inbox / late1).exists()
    rt.clock.start = due1 + 30 * 3600
    rt.dropper.tick()
    assert (inbox / late1).exists()
    rows = rt.journal.snapshot()
    assert [(r["kind"], r["file_name"]) for r in rows] == [
        ("file_late", late0),
        ("file_late", late1),
    ]
    assert "30 h late" in rows[0]["detail"]


def test_broken_redelivery_same_name_after_pickup(serve, small_world: Path) -> None:
    rt = serve({"wms": {"broken_rate": 1.0, "broken_max": 2}})  # truncated, then empty
    broken = [d for d in rt.dropper.schedule if d.broken]
    assert [d.mode for d in broken] == ["truncated", "empty"]
    inbox = rt.inbox / "wms"
    originals = {
        d.name: (small_world / "drops" / "wms" / d.name).read_bytes() for d in broken
    }
    # never over an original the platform has not taken yet
    status = rt.dropper.status()
    assert status["redeliveries_waiting"] == 2 and status["complete"] is True
    for name, data in originals.items():
        assert (inbox / name).read_bytes() == data
    archive = inbox / "archive"
    archive.mkdir()
    for name in originals:  # the platform picks the files up
        shutil.move(inbox / name, archive / name)
    rt.dropper.tick()
    first, second = (inbox / d.name for d in broken)
    cut = first.read_bytes()
    assert 0 < len(cut) < len(originals[first.name])
    assert originals[first.name].startswith(cut) and not cut.endswith(b"\n")
    assert second.stat().st_size == 0
    assert [
        (r["kind"], r["system"], r["file_name"], r["action"])
        for r in rt.journal.snapshot()
    ] == [("file_broken_redelivery", "wms", d.name, "set_aside") for d in broken]
    # a restart re-delivers nothing (ledger), even after the broken files were taken too
    for p in (first, second):
        p.unlink()
    rt.stop()
    again = Runtime(
        small_world,
        mes_port=0,
        qms_port=0,
        inbox=rt.inbox,
        faults={"wms": {"broken_rate": 1.0, "broken_max": 2}},
    )
    assert again.dropper.tick() == 0
    assert not first.exists() and not second.exists()
    assert len(again.journal.snapshot()) == 2


# ---- APIs ---------------------------------------------------------------------------------


def _get(rt: Runtime, target: str, timeout: float = 10.0) -> tuple[int, bytes, float]:
    """GET with a per-read socket timeout; (status, raw body, seconds)."""
    host, port = rt.servers["mes"].server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    t0 = time.monotonic()
    try:
        conn.request("GET", target, headers={"X-API-Key": "k3y"})
        resp = conn.getresponse()
        body = resp.read()
        assert len(body) == int(resp.headers["Content-Length"])
        return resp.status, body, time.monotonic() - t0
    finally:
        conn.close()


def test_stalled_answer_is_slow_but_complete(serve) -> None:
    rt = serve(
        {
            "mes": {
                "stall_rate": 1.0,
                "stall_max": 1,
                "stall_seconds": 1.5,
                "stall_bytes_per_second": 8,
            }
        }
    )
    target = "/api/v1/confirmations?limit=5"
    # a per-read timeout of 1 s never fires: bytes keep dripping
    status, body, seconds = _get(rt, target, timeout=1.0)
    assert status == 200 and seconds >= 1.5
    status2, body2, seconds2 = _get(rt, target)
    assert status2 == 200 and body2 == body and seconds2 < 1.5
    assert len(json.loads(body)["data"]) == 5
    [row] = rt.journal.snapshot()
    assert (row["kind"], row["system"], row["entity"], row["record_id"]) == (
        "api_stall",
        "mes",
        "confirmations",
        f"GET {target}",
    )


def test_empty_answer_then_the_full_one(serve) -> None:
    rt = serve({"mes": {"empty_rate": 1.0, "empty_max": 2}})
    a, b = "/api/v1/work-orders?limit=7", "/api/v1/operations?limit=7"
    assert json.loads(_get(rt, a)[1]) == {"data": [], "next_cursor": None}
    assert len(json.loads(_get(rt, a)[1])["data"]) == 7  # the retry gets the records
    assert json.loads(_get(rt, b)[1]) == {"data": [], "next_cursor": None}
    assert len(json.loads(_get(rt, b)[1])["data"]) == 7
    c = "/api/v1/produced-lots?limit=7"
    assert len(json.loads(_get(rt, c)[1])["data"]) == 7  # max reached: no more faults
    assert rt.journal.counts() == {"api_empty": 2}
    assert call(f"{rt.mes_url.rsplit('/api', 1)[0]}/_admin/requests")[2] == {
        "data_requests": 5,
        "faulted": 2,
    }


def test_stuck_cursor_repeats_then_advances(serve, small_world: Path) -> None:
    rt = serve(
        {
            "mes": {
                "stuck_cursor_rate": 1.0,
                "stuck_cursor_max": 1,
                "stuck_cursor_repeats": 4,
            }
        }
    )
    base = "/api/v1/machine-states?limit=50"
    first = json.loads(_get(rt, base)[1])  # a first page has no cursor to repeat
    c1 = first["next_cursor"]
    stuck = json.loads(_get(rt, f"{base}&cursor={c1}")[1])
    assert stuck["next_cursor"] == c1 and stuck["data"] != first["data"]
    for _ in range(3):  # the same page and the same cursor: 4 answers in all
        assert json.loads(_get(rt, f"{base}&cursor={c1}")[1]) == stuck
    out, nxt = list(first["data"]), c1
    while nxt:  # then the feed advances and pages through everything
        page = json.loads(_get(rt, f"{base}&cursor={nxt}")[1])
        assert page["next_cursor"] != nxt
        out.extend(page["data"])
        nxt = page["next_cursor"]
    assert out[50:100] == stuck["data"]
    assert [(r["updated_at"], r["state_id"]) for r in out] == [
        (iso(u), i) for u, i in all_rows(small_world, MES["machine-states"][0])
    ]
    assert rt.journal.counts() == {"api_stuck_cursor": 4}


def test_malformed_json_then_valid_and_admin_arming(serve) -> None:
    rt = serve({"mes": {"malformed_rate": 1.0, "malformed_max": 1}})
    target = "/api/v1/confirmations?limit=3"
    status, body, _s = _get(rt, target)
    assert status == 200
    with pytest.raises(ValueError):
        json.loads(body)
    assert len(json.loads(_get(rt, target)[1])["data"]) == 3
    admin = rt.mes_url.rsplit("/api", 1)[0] + "/_admin/faults"
    assert call(admin, method="POST", body={"kind": "empty", "count": 1})[0] == 200
    assert call(admin, method="POST", body={"kind": "nope"})[0] == 400
    assert json.loads(_get(rt, "/api/v1/operations?limit=3")[1])["data"] == []
    status, _h, listed = call(admin)
    assert status == 200 and listed["counts"]["api_malformed_json"] == 1
    assert [r["kind"] for r in listed["injected"]] == [
        "api_malformed_json",
        "api_empty",
    ]


def test_retrying_client_loses_nothing_under_api_faults(
    serve, small_world: Path
) -> None:
    """Shares of cut-off, stuck and stalled answers on every MES entity: a client that retries
    a bad answer (and re-asks a repeated cursor) still gets every record exactly once."""
    rt = serve(
        {
            "mes": {
                "malformed_rate": 0.2,
                "stuck_cursor_rate": 0.1,
                "stuck_cursor_repeats": 3,
                "stall_rate": 0.03,
                "stall_seconds": 0.3,
            }
        }
    )
    requests = 0
    for entity, (table, id_field) in MES.items():
        got, cursor = [], None
        while True:
            target = f"/api/v1/{entity}?limit=10" + (
                f"&cursor={cursor}" if cursor else ""
            )
            requests += 1
            try:
                page = json.loads(_get(rt, target)[1])
            except ValueError:
                continue  # cut off: retry
            if cursor is not None and page["next_cursor"] == cursor:
                continue  # the cursor did not advance: ask again
            got.extend(page["data"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        keys = [(r["updated_at"], r[id_field]) for r in got]
        assert keys == [(iso(u), i) for u, i in all_rows(small_world, table)], entity
    counts = rt.journal.counts()
    assert set(counts) == {"api_malformed_json", "api_stuck_cursor", "api_stall"}
    samplers = rt.mes.faults.samplers
    for (
        s
    ) in samplers.values():  # exactly every (1/rate)-th eligible request, seeded phase
        phase = s.acc - s.rate * s.eligible
        assert s.hits == int(phase + s.rate * s.eligible) - int(phase)
    assert counts["api_malformed_json"] == samplers["api_malformed_json"].hits
    assert counts["api_stuck_cursor"] == 3 * samplers["api_stuck_cursor"].hits
    assert counts == {k: v for k, v in rt.mes.faults.counts.items() if v}
    assert call(f"{rt.mes_url.rsplit('/api', 1)[0]}/_admin/requests")[2] == {
        "data_requests": requests,
        "faulted": sum(counts.values()),
    }


# ---- the truth ----------------------------------------------------------------------------


def test_faults_are_rows_of_truth_injected_defects(
    pg, serve, small_world: Path
) -> None:
    import psycopg
    from plant_sim.loaders import load_world

    load_world(small_world, pg.dsn)
    with psycopg.connect(pg.dsn) as conn:
        defects = conn.execute(
            "select count(*) from truth.injected_defects"
        ).fetchone()[0]
    rt = serve(
        {
            "plm": {
                "partial_rate": 1.0,
                "partial_chunks": 2,
                "partial_chunk_seconds": 0.05,
            },
            "mes": {"empty_rate": 1.0, "empty_max": 2},
        },
        truth_dsn=pg.dsn,
    )
    _get(rt, "/api/v1/confirmations?limit=5")
    _get(rt, "/api/v1/confirmations?limit=6")
    _wait(lambda: rt.dropper.status()["writing"] == 0)
    rt.stop()  # the last journal rows are copied on stop
    with psycopg.connect(pg.dsn) as conn:
        rows = conn.execute(
            "select defect_id, kind, system, entity, record_id, file_name, action "
            "from truth.injected_defects where kind like 'file_%%' or kind like 'api_%%' "
            "order by defect_id"
        ).fetchall()
        total = conn.execute("select count(*) from truth.injected_defects").fetchone()[
            0
        ]
    assert total == defects + 5
    assert [r[0] for r in rows] == list(range(defects + 1, defects + 6))
    by_kind: dict[str, int] = {}
    for r in rows:
        by_kind[r[1]] = by_kind.get(r[1], 0) + 1
    assert by_kind == {"file_partial": 3, "api_empty": 2}
    assert {r[4] for r in rows if r[1] == "api_empty"} == {
        "GET /api/v1/confirmations?limit=5",
        "GET /api/v1/confirmations?limit=6",
    }
    assert all(r[5] and r[5].startswith("PLM_EXPORT_") for r in rows if r[2] == "plm")
    # the journal in the inbox holds the same rows (for a run without a truth database)
    assert len(rt.journal.snapshot()) == 5
