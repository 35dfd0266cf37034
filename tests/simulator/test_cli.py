"""The CLI as the launcher and the e2e tests use it: separate processes, HTTP and Postgres only."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from _http import call
from _procs import ENV, SMALL
from _procs import free_port as _port
from plant_sim.drops import read_index


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "plant_sim", *args],
        env=ENV,
        text=True,
        capture_output=True,
        check=True,
        timeout=300,
    )


def _wait_health(url: str, proc: subprocess.Popen) -> dict:
    deadline = time.monotonic() + 60
    while True:
        try:
            return call(f"{url}/health", key=None)[2]
        except OSError:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else "exited"
            assert time.monotonic() < deadline
            time.sleep(0.2)


def _wait_for(cond, timeout: float = 60.0):
    """Poll `cond` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while not (got := cond()):
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.1)
    return got


def test_help_lists_commands() -> None:
    out = _cli("--help").stdout
    for cmd in ("generate", "load", "serve", "up"):
        assert cmd in out


def test_generate_then_serve(tmp_path: Path) -> None:
    summary = json.loads(
        _cli(
            "generate",
            "--config",
            str(SMALL),
            "--seed",
            "7",
            "--out",
            str(tmp_path / "w"),
        ).stdout
    )
    assert summary["first_shift_start"] == "2026-10-24T04:00:00Z"
    mes, qms = _port(), _port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "plant_sim",
            "serve",
            "--world",
            str(tmp_path / "w"),
            "--mes-port",
            str(mes),
            "--qms-port",
            str(qms),
            "--api-key",
            "k3y",
            "--inbox",
            str(tmp_path / "inbox"),
        ],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        health = _wait_health(f"http://127.0.0.1:{mes}/api/v1", proc)
        assert health["status"] == "ok" and "confirmations" in health["entities"]

        # never count a half-delivered inbox: wait until the plant says every due file is in
        def delivered() -> dict | None:
            h = call(f"http://127.0.0.1:{mes}/api/v1/health", key=None)[2]
            return h if h["drops"]["complete"] else None

        health = _wait_for(delivered)
        files = len(read_index(tmp_path / "w"))
        assert health["drops"]["delivered"] == health["drops"]["files"] == files
        status, _h, body = call(
            f"http://127.0.0.1:{qms}/api/v1/usage-decisions?limit=3"
        )
        assert status == 200 and len(body["data"]) == 3
        assert (
            len(list((tmp_path / "inbox" / "scada").glob("SCADA_TAGS_*.csv")))
            == 3 * 24 + 1
        )  # DST: 25 h
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def test_up_live_moves_rows_and_files(pg, scratch_dbs, tmp_path: Path) -> None:
    import psycopg

    erp = scratch_dbs("sim_test_up_erp")
    eam = scratch_dbs("sim_test_up_eam")
    mes, qms = _port(), _port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "plant_sim",
            "up",
            "--config",
            str(SMALL),
            "--seed",
            "7",
            "--out",
            str(tmp_path / "w"),
            "--truth-dsn",
            pg.dsn,
            "--erp-dsn",
            erp,
            "--eam-dsn",
            eam,
            "--mes-port",
            str(mes),
            "--qms-port",
            str(qms),
            "--clock",
            "live",
            "--speed",
            "7200",
            "--inbox",
            str(tmp_path / "inbox"),
        ],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_health(f"http://127.0.0.1:{mes}/api/v1", proc)

        def files() -> int:
            return len(list((tmp_path / "inbox").rglob("*.csv")))

        with psycopg.connect(eam, autocommit=True) as conn:

            def failures() -> int:
                return conn.execute("select count(*) from eam.failures").fetchone()[0]

            first, files_first = failures(), files()
            # the live clock runs 7200× (2 plant hours per second): rows and files keep coming
            later = _wait_for(lambda: (n := failures()) > first and n)
            files_later = _wait_for(lambda: (n := files()) > files_first and n)
        assert later > first
        assert files_later > files_first
        with psycopg.connect(pg.dsn) as conn:
            assert (
                conn.execute("select count(*) from truth.oee_machine_shift").fetchone()[
                    0
                ]
                == 36
            )
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
