"""`python -m edge_collector run [--config gateway.toml] [--plc-port …] …`: poll and publish until
SIGTERM/SIGINT, then drain what the broker has not acknowledged and exit 0. The broker's
password comes from EDGE_MQTT_PASSWORD, never from the command line. `check` prints the
configuration the collector would run with (no password) and exits."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from dataclasses import asdict
from pathlib import Path

from edge_collector.config import DEFAULT_CONFIG, OVERRIDES, ConfigError, load_config


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m edge_collector", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("run", "check"):
        cmd = sub.add_parser(name)
        cmd.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                         help="the gateway's TOML (default: the package's gateway.toml)")
        for option, (section, key, kind, variable) in OVERRIDES.items():
            cmd.add_argument(f"--{option.replace('_', '-')}", dest=option, type=kind,
                             help=f"[{section}] {key} (or {variable})")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # pymodbus logs every failed connect as an error, each poll; the collector logs a PLC that
    # stays away once (and when it answers again)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    try:
        cfg = load_config(args.config, vars(args))
    except (ConfigError, OSError, KeyError) as exc:
        print(f"edge_collector: {exc}", file=sys.stderr)
        return 2
    if args.command == "check":
        shown = {k: v for k, v in asdict(cfg).items() if k != "mqtt_password"}
        shown["mqtt_password_set"] = cfg.mqtt_password is not None
        print(json.dumps(shown, indent=2, default=str))
        return 0
    from edge_collector.collector import Collector

    collector = Collector(cfg)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: collector.stop())
    collector.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
