"""Command line: `python -m plant_sim {generate,load,serve,up}` (see README "CLI")."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "default.toml"


def _manifest(world: Path) -> dict[str, Any]:
    path = world / "world.json"
    if not path.exists():
        raise SystemExit(
            f"{world} is not a generated world (no world.json); run generate first"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def cmd_generate(args: argparse.Namespace) -> int:
    """Generate a world folder."""
    from plant_sim.config import load_config
    from plant_sim.world import generate_world

    t0 = time.perf_counter()
    cfg = load_config(args.config)
    manifest = generate_world(cfg, args.seed, Path(args.out))
    print(
        json.dumps(
            {
                "world": str(args.out),
                "seconds": round(time.perf_counter() - t0, 2),
                **{k: manifest[k] for k in ("first_shift_start", "last_shift_end")},
                "mes_counts": manifest["mes_counts"],
            },
            ensure_ascii=False,
        )
    )
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    """Load truth (and the ERP/EAM databases) from a world folder."""
    from plant_sim.loaders import load_world

    world = Path(args.world)
    _manifest(world)
    counts = load_world(world, args.truth_dsn, args.erp_dsn, args.eam_dsn)
    print(json.dumps(counts, ensure_ascii=False))
    return 0


class _Stopped(BaseException):
    """Raised in the main thread by SIGTERM/SIGINT while the plant is still starting."""


class _Signals:
    """SIGTERM/SIGINT stop the plant cleanly at any point. While it generates or loads the
    world the handler raises `_Stopped`, so start-up unwinds at once (harmless there: world.json
    is written last, database loads are transactions). From the runtime's first file delivery
    on it only records the request (and tells the dropper to stop between two files); the main
    loop then stops everything, so no delivery is cut between its rename and its ledger line."""

    def __init__(self) -> None:
        self.requested: int | None = None
        self.raising = True
        self.on_signal: Any = None

    def install(self) -> _Signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)
        # a supervisor may block them around fork/exec: a signal sent meanwhile lands here
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
        return self

    def defer(self, on_signal: Any) -> None:
        """From now on a signal only records the request and calls `on_signal()`."""
        self.raising = False
        self.on_signal = on_signal

    def _handle(self, signum: int, _frame: Any) -> None:
        self.requested = signum
        if self.on_signal is not None:
            self.on_signal()
        if self.raising:
            self.raising = False
            raise _Stopped(signum)


def _run_plant(args: argparse.Namespace, prepare: Any) -> int:
    """Start the plant with `prepare(args, runtimes, signals)`, serve until SIGTERM/SIGINT,
    stop every runtime started and return 0 — whenever the signal comes."""
    sig = _Signals()
    runtimes: list[Any] = []
    try:
        sig.install()  # a signal pending since exec is taken here
        print(json.dumps({"status": "starting", "pid": os.getpid()}), flush=True)
        prepare(args, runtimes, sig)
        sig.raising = False
        while sig.requested is None:
            time.sleep(0.2)
    except _Stopped:
        pass
    finally:
        sig.raising = False
        for rt in runtimes:
            rt.stop()
    name = signal.Signals(sig.requested).name if sig.requested else None
    print(json.dumps({"status": "stopped", "signal": name}), flush=True)
    return 0


def _faults(args: argparse.Namespace) -> dict[str, Any] | None:
    from plant_sim.faults import load_spec

    return load_spec(args.faults) if getattr(args, "faults", None) else None


def _serve(
    world: Path, args: argparse.Namespace, runtimes: list[Any], sig: _Signals
) -> None:
    from plant_sim.runtime import Runtime

    rt = Runtime(
        world,
        mes_port=args.mes_port,
        qms_port=args.qms_port,
        api_key=args.api_key,
        clock_mode=args.clock,
        speed=args.speed,
        start=args.start,
        inbox=Path(args.inbox) if args.inbox else None,
        host=args.host,
        erp_dsn=getattr(args, "erp_dsn", None),
        eam_dsn=getattr(args, "eam_dsn", None),
        faults=_faults(args),
        truth_dsn=getattr(args, "truth_dsn", None),
        opcua_port=args.opcua_port,
        modbus_port=args.modbus_port,
        mqtt=_mqtt_target(args),
    )
    runtimes.append(rt)
    sig.defer(rt.dropper.interrupt)
    if sig.requested is None:
        rt.start()
    if sig.requested is None:
        print(json.dumps(rt.describe(), ensure_ascii=False), flush=True)


def _mqtt_target(args: argparse.Namespace) -> Any:
    """The broker to publish machine events to (`--mqtt-port` given), password from the
    environment variable PLANT_MQTT_PASSWORD (never a command line)."""
    if args.mqtt_port is None:
        return None
    from plant_sim.protocols.runner import MqttTarget

    return MqttTarget(
        args.mqtt_host,
        args.mqtt_port,
        args.mqtt_user,
        os.environ.get("PLANT_MQTT_PASSWORD") or None,
        args.mqtt_client_id,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve a generated world until SIGTERM/SIGINT."""
    world = Path(args.world)
    _manifest(world)
    _faults(args)  # a bad faults file fails before anything starts
    return _run_plant(args, lambda a, rts, sig: _serve(world, a, rts, sig))


def _up(args: argparse.Namespace, runtimes: list[Any], sig: _Signals) -> None:
    from plant_sim.config import load_config
    from plant_sim.loaders import load_world
    from plant_sim.world import generate_world

    world = Path(args.out)
    cfg = load_config(args.config)
    current = None
    if (world / "world.json").exists():
        current = json.loads((world / "world.json").read_text(encoding="utf-8"))
    if (
        not current
        or current.get("seed") != args.seed
        or current.get("config_sha256") != cfg.sha256
    ):
        generate_world(cfg, args.seed, world)
    until = "infinity"
    if args.clock == "live":
        until = (
            args.start
            or json.loads((world / "world.json").read_text())["first_shift_start"]
        )
    if args.truth_dsn or args.erp_dsn or args.eam_dsn:
        counts = load_world(world, args.truth_dsn, args.erp_dsn, args.eam_dsn, until)
        print(json.dumps(counts), flush=True)
    _serve(world, args, runtimes, sig)


def cmd_up(args: argparse.Namespace) -> int:
    """Generate (if needed) + load + serve, for the launcher."""
    _faults(args)
    return _run_plant(args, _up)


def _add_serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--host", default="127.0.0.1", help="bind address (default 127.0.0.1)"
    )
    p.add_argument(
        "--mes-port", type=int, default=18081, help="MES HTTP port (default 18081)"
    )
    p.add_argument(
        "--qms-port", type=int, default=18082, help="QMS HTTP port (default 18082)"
    )
    p.add_argument(
        "--api-key",
        default=os.environ.get("PLANT_API_KEY") or None,
        help="require this X-API-Key on MES/QMS requests (default: the environment variable "
        "PLANT_API_KEY, which keeps the key off the command line)",
    )
    p.add_argument(
        "--opcua-port",
        type=int,
        default=None,
        help="serve OPC UA (address space + HistoryRead) on this port (default: off)",
    )
    p.add_argument(
        "--modbus-port",
        type=int,
        default=None,
        help="serve the lines' PLCs over Modbus TCP on this port (default: off)",
    )
    p.add_argument(
        "--mqtt-host", default="127.0.0.1", help="MQTT broker host (default 127.0.0.1)"
    )
    p.add_argument(
        "--mqtt-port",
        type=int,
        default=None,
        help="publish machine events to the MQTT broker on this port (default: off)",
    )
    p.add_argument(
        "--mqtt-user",
        default=None,
        help="MQTT user name; its password is taken from the environment variable "
        "PLANT_MQTT_PASSWORD",
    )
    p.add_argument(
        "--mqtt-client-id",
        default="plant-sim",
        help="the publisher's MQTT client id (persistent session; default plant-sim)",
    )
    p.add_argument(
        "--clock",
        choices=["batch", "live"],
        default="batch",
        help="batch: all data visible; live: visibility follows a moving clock",
    )
    p.add_argument(
        "--speed",
        type=float,
        default=60.0,
        help="live clock speed, simulated seconds per real second (default 60)",
    )
    p.add_argument(
        "--start",
        default=None,
        help="live clock start, ISO 8601 UTC (default: the world's first shift start)",
    )
    p.add_argument(
        "--inbox",
        default=None,
        help="root folder for file drops (default <world>/inbox)",
    )
    p.add_argument(
        "--faults",
        default=None,
        metavar="TOML",
        help="delivery faults: a TOML file with [faults.<system>] tables (replaces the "
        "world config's; an empty file switches them off); see README 'Faults'",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree."""
    ap = argparse.ArgumentParser(
        prog="python -m plant_sim",
        description="Deterministic simulated plant (see README.md).",
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser(
        "generate", help="generate a world folder from a config and a seed"
    )
    g.add_argument(
        "--config",
        default=str(DEFAULT_CONFIG),
        help="TOML config (default: default.toml)",
    )
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--out", required=True, help="world folder to write")
    g.set_defaults(func=cmd_generate)
    ld = sub.add_parser(
        "load", help="load truth (+ ERP/EAM databases) from a world folder"
    )
    ld.add_argument("--world", required=True)
    ld.add_argument(
        "--truth-dsn", required=True, help="warehouse DSN; schema truth is replaced"
    )
    ld.add_argument(
        "--erp-dsn", default=None, help="DSN of the ERP database (tables replaced)"
    )
    ld.add_argument(
        "--eam-dsn", default=None, help="DSN of the EAM database (tables replaced)"
    )
    ld.set_defaults(func=cmd_load)
    sv = sub.add_parser(
        "serve", help="serve a world: MES/QMS HTTP, file drops, live DB rows"
    )
    sv.add_argument("--world", required=True)
    sv.add_argument(
        "--erp-dsn", default=None, help="live clock: keep moving due ERP rows here"
    )
    sv.add_argument(
        "--eam-dsn", default=None, help="live clock: keep moving due EAM rows here"
    )
    sv.add_argument(
        "--truth-dsn",
        default=None,
        help="record injected delivery faults in truth.injected_defects there",
    )
    _add_serve_args(sv)
    sv.set_defaults(func=cmd_serve)
    up = sub.add_parser("up", help="generate (if config/seed changed) + load + serve")
    up.add_argument("--config", default=str(DEFAULT_CONFIG))
    up.add_argument("--seed", type=int, default=42)
    up.add_argument("--out", required=True, help="world folder")
    up.add_argument("--truth-dsn", default=None)
    up.add_argument("--erp-dsn", default=None)
    up.add_argument("--eam-dsn", default=None)
    _add_serve_args(up)
    up.set_defaults(func=cmd_up)
    return ap


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
