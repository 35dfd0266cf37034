"""The gateway's configuration: a TOML file (PLCs, machines, poll interval, broker) and its
register map (another TOML file), with overrides from the command line and `EDGE_*` variables.

The broker's password is read from `EDGE_MQTT_PASSWORD` only: never a file, an argument or a
log line (`GatewayConfig`'s repr leaves it out).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_CONFIG = Path(__file__).with_name("gateway.toml")
PASSWORD_ENV = "EDGE_MQTT_PASSWORD"
WIDTHS = {"uint16": 1, "int16": 1, "uint32": 2, "int32": 2}

# scalar setting → (section, key, type, EDGE_* variable)
OVERRIDES: dict[str, tuple[str, str, type, str]] = {
    "poll_interval_s": ("collector", "poll_interval_s", float, "EDGE_POLL_INTERVAL_S"),
    "publish": ("collector", "publish", str, "EDGE_PUBLISH"),
    "heartbeat_s": ("collector", "heartbeat_s", int, "EDGE_HEARTBEAT_S"),
    "enterprise": ("collector", "enterprise", str, "EDGE_ENTERPRISE"),
    "plc_host": ("plc", "host", str, "EDGE_PLC_HOST"),
    "plc_port": ("plc", "port", int, "EDGE_PLC_PORT"),
    "plc_timeout_s": ("plc", "timeout_s", float, "EDGE_PLC_TIMEOUT_S"),
    "mqtt_host": ("broker", "host", str, "EDGE_MQTT_HOST"),
    "mqtt_port": ("broker", "port", int, "EDGE_MQTT_PORT"),
    "mqtt_user": ("broker", "user", str, "EDGE_MQTT_USER"),
    "client_id": ("broker", "client_id", str, "EDGE_MQTT_CLIENT_ID"),
    "queue_limit": ("broker", "queue_limit", int, "EDGE_QUEUE_LIMIT"),
}


class ConfigError(ValueError):
    """The gateway's configuration is incomplete or contradicts itself."""


@dataclass(frozen=True)
class Register:
    """One value of a machine's block: `value = raw × scale`."""

    name: str
    address: int  # offset inside the machine's block
    type: str  # uint16, int16, uint32, int32 (32-bit: high word first)
    scale: float = 1

    @property
    def width(self) -> int:
        return WIDTHS[self.type]

    def decode(self, words: list[int]) -> int | float:
        """This register's value from the block's words (read from the block's start)."""
        if self.width == 1:
            raw = words[self.address]
        else:
            raw = (words[self.address] << 16) | words[self.address + 1]
        if self.type.startswith("int"):
            bits = 16 * self.width
            if raw & (1 << (bits - 1)):
                raw -= 1 << bits
        if self.scale == 1:
            return raw
        return round(raw * self.scale, 6)


@dataclass(frozen=True)
class RegisterMap:
    block_size: int
    function: str  # input (FC 4) or holding (FC 3)
    time_register: str
    registers: tuple[Register, ...]

    @property
    def span(self) -> int:
        """Registers to read per machine: from the block's start to its last mapped word."""
        return max(r.address + r.width for r in self.registers)

    def decode(self, words: list[int]) -> dict[str, int | float]:
        return {r.name: r.decode(words) for r in self.registers}


@dataclass(frozen=True)
class Device:
    """A PLC (Modbus device id) and the machines of its line, in block order."""

    device_id: int
    site: str
    area: str
    line: str
    machines: tuple[str, ...]


@dataclass(frozen=True)
class GatewayConfig:
    poll_interval_s: float
    publish: str  # "change" (report by exception, with a heartbeat) or "every_poll"
    heartbeat_s: int  # change: a reading at least this many PLC seconds after the last one
    enterprise: str
    plc_host: str
    plc_port: int
    plc_timeout_s: float
    mqtt_host: str
    mqtt_port: int
    mqtt_user: str | None
    client_id: str
    queue_limit: int
    devices: tuple[Device, ...]
    register_map: RegisterMap
    mqtt_password: str | None = field(default=None, repr=False)

    def topic(self, device: Device, machine: str) -> str:
        """The unified namespace: `<enterprise>/<site>/<area>/<line>/<machine>/plc`."""
        return f"{self.enterprise}/{device.site}/{device.area}/{device.line}/{machine}/plc"


def load_register_map(path: Path) -> RegisterMap:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    registers = tuple(
        Register(r["name"], int(r["address"]), r["type"], r.get("scale", 1))
        for r in data["registers"]
    )
    for r in registers:
        if r.type not in WIDTHS:
            raise ConfigError(f"{path}: register {r.name}: unknown type {r.type!r}")
    names = [r.name for r in registers]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: a register name appears twice")
    regmap = RegisterMap(int(data.get("block_size", 100)), data.get("function", "input"),
                         data["time_register"], registers)
    if regmap.time_register not in names:
        raise ConfigError(f"{path}: time_register {regmap.time_register!r} is not mapped")
    if regmap.function not in ("input", "holding"):
        raise ConfigError(f"{path}: function must be input or holding")
    if regmap.span > min(regmap.block_size, 125):  # 125: Modbus's most registers per read
        raise ConfigError(f"{path}: the map spans {regmap.span} registers")
    return regmap


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None,
                environ: dict[str, str] | None = None) -> GatewayConfig:
    """The gateway's configuration: the file, then `EDGE_*` variables, then `overrides` (the
    command line's, None = not given). The password from `EDGE_MQTT_PASSWORD` alone."""
    path = Path(path or DEFAULT_CONFIG)
    environ = os.environ if environ is None else environ
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    values: dict[str, Any] = {}
    for name, (section, key, kind, variable) in OVERRIDES.items():
        value = data.get(section, {}).get(key)
        if environ.get(variable):
            value = environ[variable]
        if overrides and overrides.get(name) is not None:
            value = overrides[name]
        if value is None and name != "mqtt_user":
            raise ConfigError(f"{path}: [{section}] {key} is not set (nor {variable})")
        try:
            values[name] = None if value is None else kind(value)
        except (TypeError, ValueError):
            raise ConfigError(f"[{section}] {key} (or {variable}, or the command line): {value!r} "
                              f"is not {kind.__name__}") from None
    if values["poll_interval_s"] <= 0:
        raise ConfigError("poll_interval_s must be positive")
    if values["publish"] not in ("change", "every_poll"):
        raise ConfigError("publish must be change or every_poll")
    if values["heartbeat_s"] < 0:
        raise ConfigError("heartbeat_s must not be negative")
    devices = tuple(
        Device(int(d["device_id"]), d["site"], d["area"], d["line"], tuple(d["machines"]))
        for d in data.get("devices", [])
    )
    if not devices:
        raise ConfigError(f"{path}: no [[devices]]")
    machines = [m for d in devices for m in d.machines]
    if len(set(machines)) != len(machines):
        raise ConfigError(f"{path}: a machine is listed twice")
    ids = [d.device_id for d in devices]
    if len(set(ids)) != len(ids):  # both lists would start at the same unit's block 0
        raise ConfigError(f"{path}: a device_id is listed twice (one [[devices]] per PLC unit)")
    regmap = load_register_map(path.parent / data.get("register_map", "register_map.toml"))
    return GatewayConfig(**values, devices=devices, register_map=regmap,
                         mqtt_password=environ.get(PASSWORD_ENV) or None)
