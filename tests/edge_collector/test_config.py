"""The gateway's configuration: the shipped files describe make run's plant, overrides come in
a fixed order (file < EDGE_* < command line), the password only from the environment and never
in a repr, a wrong register map is refused; the register types decode as the PLC encodes."""

from __future__ import annotations

from pathlib import Path

import pytest
from _edge_gateway import INCLUDE, MACHINES
from edge_collector.config import ConfigError, Register, load_config


def test_shipped_gateway_is_make_runs_plant() -> None:
    """Its PLCs and machines are the default plant's (a unit id per line, in the config's
    order; a machine's block its index - 1), its root the plant's enterprise."""
    from plant_sim.config import load_config as load_plant
    from plant_sim.protocols.modbus import BLOCK
    from plant_sim.systems.shopfloor import ENTERPRISE

    plant = load_plant(INCLUDE / "plant_sim" / "configs" / "default.toml")
    cfg = load_config(environ={})
    assert [(d.device_id, d.site, d.area, d.line, d.machines) for d in cfg.devices] == [
        (unit, line.site_code, line.area_code, line.code,
         tuple(m.code for m in sorted(line.machines, key=lambda m: m.index)))
        for unit, line in enumerate(plant.lines, start=1)]
    assert [m.index for line in plant.lines for m in line.machines] == [1, 2, 3, 4] * 3
    assert cfg.enterprise == ENTERPRISE
    assert set(MACHINES) < {m for d in cfg.devices for m in d.machines}
    assert cfg.register_map.span == 14 and cfg.register_map.block_size == BLOCK
    assert cfg.topic(cfg.devices[2], "ERF-L3-M04") == "ENT/ERF/ERF-MOLD/ERF-L3/ERF-L3-M04/plc"
    assert (cfg.publish, cfg.heartbeat_s, cfg.poll_interval_s) == ("change", 60, 1.0)
    assert cfg.mqtt_password is None


def test_overrides_in_order_and_the_password_from_the_environment_only() -> None:
    environ = {"EDGE_PLC_PORT": "1502", "EDGE_MQTT_HOST": "broker.example",
               "EDGE_MQTT_PASSWORD": "s3cret-edge"}
    cfg = load_config(overrides={"plc_port": 2502, "client_id": None}, environ=environ)
    assert cfg.plc_port == 2502  # the command line over the environment
    assert cfg.mqtt_host == "broker.example"  # the environment over the file
    assert cfg.client_id == "edge-collector-erf"  # not given: the file's
    assert cfg.mqtt_password == "s3cret-edge"
    assert "s3cret-edge" not in repr(cfg)


def test_a_wrong_register_map_is_refused(tmp_path: Path) -> None:
    gateway = (INCLUDE / "edge_collector" / "gateway.toml").read_text()
    regmap = (INCLUDE / "edge_collector" / "register_map.toml").read_text()
    (tmp_path / "gateway.toml").write_text(gateway)
    for broken, why in ((regmap.replace('type = "int16"', 'type = "float16"'), "unknown type"),
                        (regmap.replace('time_register = "plant_time"',
                                        'time_register = "clock"'), "not mapped"),
                        (regmap.replace("address = 12", "address = 130"), "spans")):
        (tmp_path / "register_map.toml").write_text(broken)
        with pytest.raises(ConfigError, match=why):
            load_config(tmp_path / "gateway.toml", environ={})


def test_register_types_decode_as_the_plc_encodes() -> None:
    words = [0xFFFF, 0xFFFE, 0xFF38, 0x0001, 0x86A0, 0x0190]
    assert Register("c", 0, "uint32").decode(words) == 4294967294
    assert Register("c", 0, "int32").decode(words) == -2
    assert Register("t", 2, "int16", 0.1).decode(words) == -20.0  # -200 × 0.1 °C
    assert Register("n", 3, "uint32").decode(words) == 100000
    assert Register("s", 5, "uint16", 0.1).decode(words) == 40.0


def test_a_wrong_gateway_file_is_refused(tmp_path: Path) -> None:
    """A value of the wrong type (from any of the three places) and a PLC unit listed twice (its
    machines would be read from the same blocks) are refused with what is wrong, not a
    traceback."""
    gateway = (INCLUDE / "edge_collector" / "gateway.toml").read_text()
    (tmp_path / "register_map.toml").write_text(
        (INCLUDE / "edge_collector" / "register_map.toml").read_text())
    (tmp_path / "gateway.toml").write_text(gateway)
    with pytest.raises(ConfigError, match=r"\[plc\] port .*'fifteen' is not int"):
        load_config(tmp_path / "gateway.toml", environ={"EDGE_PLC_PORT": "fifteen"})
    with pytest.raises(ConfigError, match=r"poll_interval_s .*'soon' is not float"):
        load_config(tmp_path / "gateway.toml", {"poll_interval_s": "soon"}, environ={})
    (tmp_path / "gateway.toml").write_text(gateway.replace("device_id = 2", "device_id = 1"))
    with pytest.raises(ConfigError, match="a device_id is listed twice"):
        load_config(tmp_path / "gateway.toml", environ={})
