"""`serve` and `up` stop cleanly on SIGTERM/SIGINT whenever it comes: exit 0, no hidden temp
file, no half-written world.json, files being written in place finished."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from _http import call
from _procs import ENV, SMALL
from _procs import free_port as _port
from plant_sim.config import load_config
from plant_sim.drops import read_index
from plant_sim.world import generate_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("stop_world")
    generate_world(load_config(SMALL), 7, out)
    return out


def _plant(*args: str, **popen: Any) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "plant_sim", *args],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def _first_line(proc: subprocess.Popen) -> dict:
    """The plant's first line: it handles signals from then on."""
    line = proc.stdout.readline()
    assert line, proc.stderr.read()
    got = json.loads(line)
    assert got["status"] == "starting" and got["pid"] == proc.pid
    return got


def _health(port: int, proc: subprocess.Popen, cond: Any = bool) -> dict:
    deadline = time.monotonic() + 60
    while True:
        try:
            h = call(f"http://127.0.0.1:{port}/api/v1/health", key=None)[2]
            if cond(h):
                return h
        except OSError:
            assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "plant not ready"
        time.sleep(0.05)


def _stopped(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> str:
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    last = json.loads(out.strip().splitlines()[-1])
    assert last == {"status": "stopped", "signal": signal.Signals(sig).name}
    return out


def _no_temp_files(root: Path) -> None:
    assert sorted(str(p) for p in root.rglob(".*.part")) == []


def _ledger_is_the_inbox(inbox: Path) -> None:
    """Every file in the inbox is whole and in the ledger, and only those (a restart delivers
    exactly the rest)."""
    files = {
        f"{p.parent.name}/{p.name}"
        for p in inbox.glob("*/*")
        if p.is_file() and not p.name.startswith(".")
    }
    ledger = inbox / ".plant_sim_dropped"
    done = set(ledger.read_text(encoding="utf-8").split()) if ledger.exists() else set()
    assert files == done


def _serve_args(world: Path, inbox: Path, mes: int) -> list[str]:
    return [
        "serve",
        "--world",
        str(world),
        "--inbox",
        str(inbox),
        "--mes-port",
        str(mes),
        "--qms-port",
        str(_port()),
    ]


@pytest.mark.parametrize(
    ("sig", "offset"),
    [
        (signal.SIGTERM, 0.0),
        (signal.SIGINT, 0.0),
        (signal.SIGTERM, 0.05),
        (signal.SIGTERM, 0.15),
        (signal.SIGTERM, 0.3),
    ],
)
def test_serve_stopped_while_starting(
    world: Path, tmp_path: Path, sig: int, offset: float
) -> None:
    """The signal lands while the runtime imports, reads the world, delivers the first files
    or opens its ports (`offset` after the first line only varies where; the outcome must
    not depend on it)."""
    proc = _plant(*_serve_args(world, tmp_path / "inbox", _port()))
    _first_line(proc)
    time.sleep(offset)
    _stopped(proc, sig)
    _no_temp_files(tmp_path)
    _ledger_is_the_inbox(tmp_path / "inbox")


def test_serve_stopped_while_serving(world: Path, tmp_path: Path) -> None:
    mes = _port()
    proc = _plant(*_serve_args(world, tmp_path / "inbox", mes), "--api-key", "k3y")
    _first_line(proc)
    _health(mes, proc, lambda h: h["drops"]["complete"])
    status, _h, body = call(f"http://127.0.0.1:{mes}/api/v1/confirmations?limit=2")
    assert status == 200 and len(body["data"]) == 2
    _stopped(proc)
    _no_temp_files(tmp_path)
    _ledger_is_the_inbox(tmp_path / "inbox")
    delivered = [p for p in (tmp_path / "inbox").rglob("*") if p.is_file()]
    assert len(delivered) == len(read_index(world)) + 1  # + the ledger


def test_serve_stopped_while_files_are_written_in_place(
    world: Path, tmp_path: Path
) -> None:
    faults = tmp_path / "faults.toml"
    faults.write_text(
        "[faults.scada]\npartial_rate = 1.0\npartial_chunks = 4\n"
        "partial_chunk_seconds = 60\n",
        encoding="utf-8",
    )
    mes = _port()
    inbox = tmp_path / "inbox"
    proc = _plant(*_serve_args(world, inbox, mes), "--faults", str(faults))
    _first_line(proc)
    h = _health(mes, proc)
    scada = sum(1 for _a, s, _n in read_index(world) if s == "scada")
    assert h["drops"]["writing"] == scada and not h["drops"]["complete"]
    assert h["faults"] == {"file_partial": scada}
    _stopped(proc)
    _no_temp_files(tmp_path)
    # a clean stop finishes the files it was writing: each is whole and in the ledger
    for _at, system, name in read_index(world):
        assert (inbox / system / name).read_bytes() == (
            world / "drops" / system / name
        ).read_bytes()
    ledger = (inbox / ".plant_sim_dropped").read_text(encoding="utf-8").split()
    assert len(ledger) == len(set(ledger)) == len(read_index(world))


def test_up_stopped_while_generating(tmp_path: Path) -> None:
    out = tmp_path / "w"
    proc = _plant(
        "up",
        "--config",
        str(SMALL),
        "--seed",
        "7",
        "--out",
        str(out),
        "--mes-port",
        str(_port()),
        "--qms-port",
        str(_port()),
    )
    _first_line(proc)
    _stopped(proc)
    _no_temp_files(tmp_path)
    # world.json is written last: an interrupted generation leaves none (the next `up`
    # generates again); if generation had finished, the world is whole
    if (out / "world.json").exists():
        manifest = json.loads((out / "world.json").read_text(encoding="utf-8"))
        assert len(read_index(out)) == manifest["drop_files"]


def test_signal_pending_before_the_handler_is_installed(
    world: Path, tmp_path: Path
) -> None:
    """A supervisor that blocks SIGTERM around fork/exec may signal at once: the plant takes
    the pending signal as soon as its handler is in place."""
    proc = _plant(
        *_serve_args(world, tmp_path / "inbox", _port()),
        preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM}),
    )
    _stopped(proc)
    _no_temp_files(tmp_path)
    _ledger_is_the_inbox(tmp_path / "inbox")
