"""The MES HTTP API: pagination, windows, auth, errors and fault injection."""

from __future__ import annotations

from pathlib import Path

from _feed import all_rows
from _http import call, fetch_all
from plant_sim.systems.mes import ENTITIES
from plant_sim.timeutil import iso, parse_iso_utc


def test_every_record_exactly_once_by_pages(mes_runtime, small_world: Path) -> None:
    base = mes_runtime.mes_url
    for entity, (table, id_field) in ENTITIES.items():
        got = fetch_all(base, entity, limit=97)
        keys = [(parse_iso_utc(r["updated_at"]), r[id_field]) for r in got]
        assert keys == all_rows(small_world, table), entity
        assert len(set(keys)) == len(keys)
        assert keys == sorted(keys)


def test_windows_partition_the_feed(mes_runtime, small_world: Path) -> None:
    """Consecutive [since, before) windows return every record exactly once."""
    base = mes_runtime.mes_url
    rows = all_rows(small_world, "machine_states")
    lo, hi = rows[0][0], rows[-1][0] + 1
    step = 3 * 3600 + 17
    seen: list[tuple[int, str]] = []
    t = lo - (lo % 3600)
    while t < hi:
        got = fetch_all(
            base,
            "machine-states",
            limit=50,
            updated_since=iso(t),
            updated_before=iso(t + step),
        )
        for r in got:
            u = parse_iso_utc(r["updated_at"])
            assert t <= u < t + step
            seen.append((u, r["state_id"]))
        t += step
    assert sorted(seen) == rows
    # boundary semantics: since is inclusive, before is exclusive
    u0, id0 = rows[len(rows) // 2]
    incl = fetch_all(
        base, "machine-states", updated_since=iso(u0), updated_before=iso(u0 + 1)
    )
    assert id0 in {r["state_id"] for r in incl}
    excl = fetch_all(
        base, "machine-states", updated_since=iso(u0 - 5), updated_before=iso(u0)
    )
    assert id0 not in {r["state_id"] for r in excl}


def test_offsets_are_accepted_and_naive_rejected(mes_runtime) -> None:
    base = mes_runtime.mes_url
    a = fetch_all(base, "confirmations", updated_since="2026-10-25T02:00:00%2B01:00")
    b = fetch_all(base, "confirmations", updated_since="2026-10-25T01:00:00Z")
    assert a == b and len(a) > 0
    status, _h, body = call(f"{base}/confirmations?updated_since=2026-10-25T01:00:00")
    assert status == 400 and body["error"] == "bad_request"


def test_bad_requests(mes_runtime) -> None:
    base = mes_runtime.mes_url
    for q in (
        "limit=0",
        "limit=1001",
        "limit=x",
        "cursor=%%%",
        "foo=1",
        "updated_before=yesterday",
    ):
        status, _h, body = call(f"{base}/work-orders?{q}")
        assert status == 400, q
        assert body["error"] == "bad_request"
    status, _h, body = call(f"{base}/no-such-entity")
    assert status == 404


def test_default_limit_is_500(tmp_path: Path) -> None:
    from plant_sim.config import load_config
    from plant_sim.runtime import Runtime
    from plant_sim.world import generate_world

    cfg = load_config(
        Path(__file__).resolve().parents[2] / "include/plant_sim/configs/default.toml"
    )
    generate_world(cfg, 3, tmp_path)
    n = len(all_rows(tmp_path, "machine_states"))
    assert n > 1000
    rt = Runtime(tmp_path, mes_port=0, qms_port=0)
    rt.start()
    try:
        status, _h, body = call(f"{rt.mes_url}/machine-states", key=None)
        assert status == 200
        assert len(body["data"]) == 500 and body["next_cursor"]
        assert len(fetch_all(rt.mes_url, "machine-states", limit=1000)) == n
    finally:
        rt.stop()


def test_api_key_required(mes_runtime) -> None:
    base = mes_runtime.mes_url
    assert call(f"{base}/work-orders?limit=1", key=None)[0] == 401
    assert call(f"{base}/work-orders?limit=1", key="wrong")[0] == 401
    assert call(f"{base}/work-orders?limit=1")[0] == 200
    assert call(f"{base}/health", key=None)[0] == 200


def test_fault_injection_and_request_counter(mes_runtime) -> None:
    base = mes_runtime.mes_url
    root = base.rsplit("/api/v1", 1)[0]
    status, _h, body = call(
        f"{root}/_admin/faults", method="POST", body={"status": 500, "count": 3}
    )
    assert status == 200 and body["pending"] == 3
    before = call(f"{root}/_admin/requests")[2]["data_requests"]
    codes = [call(f"{base}/work-orders?limit=1")[0] for _ in range(4)]
    assert codes == [500, 500, 500, 200]
    call(
        f"{root}/_admin/faults",
        method="POST",
        body={"status": 429, "count": 1, "retry_after": 2},
    )
    status, headers, _b = call(f"{base}/work-orders?limit=1")
    assert status == 429 and headers["Retry-After"] == "2"
    assert call(f"{base}/work-orders?limit=1")[0] == 200
    after = call(f"{root}/_admin/requests")[2]
    assert after["data_requests"] - before == 6
    assert after["faulted"] == 4


def test_live_clock_hides_future_records(small_world: Path) -> None:
    from plant_sim.runtime import Runtime

    rows = all_rows(small_world, "confirmations")
    cut = rows[len(rows) // 3][0]
    rt = Runtime(
        small_world,
        mes_port=0,
        qms_port=0,
        clock_mode="live",
        speed=0.0,
        start=iso(cut),
    )
    rt.start()
    try:
        got = fetch_all(rt.mes_url, "confirmations", limit=1000)
        assert [
            (parse_iso_utc(r["updated_at"]), r["confirmation_id"]) for r in got
        ] == [r for r in rows if r[0] <= cut]
        _status, headers, _ = call(f"{rt.mes_url}/confirmations?limit=1", key=None)
        assert headers["X-Server-Clock"] == iso(cut)
    finally:
        rt.stop()
