"""Modbus TCP (pymodbus): one PLC per line, answering at the plant clock's instant.

One server (`--modbus-port`); the line's PLC is the Modbus device (unit) id = the line's number
in the config (ERF-L1 → 1). Each machine of the line has a block of 100 registers at
`100 × (machine index − 1)`; holding (FC 3) and input registers (FC 4) read the same block.
Read-only: a write is refused (ILLEGAL_FUNCTION). The layout is `REGISTER_MAP` (README
"Modbus register map").
"""

from __future__ import annotations

from typing import Any

from plant_sim.protocols.store import ShopfloorStore
from plant_sim.systems.shopfloor import REASON_CODES, ROLLOVER, STATE_CODES

BLOCK = 100
REGISTER_MAP: list[dict[str, Any]] = [
    {
        "offset": 0,
        "name": "good_count",
        "tag": "GoodCount",
        "type": "uint32",
        "scale": 1,
    },
    {
        "offset": 2,
        "name": "scrap_count",
        "tag": "ScrapCount",
        "type": "uint32",
        "scale": 1,
    },
    {
        "offset": 4,
        "name": "rework_count",
        "tag": "ReworkCount",
        "type": "uint32",
        "scale": 1,
    },
    {
        "offset": 6,
        "name": "total_count",
        "tag": "TotalCount",
        "type": "uint32",
        "scale": 1,
    },
    {"offset": 8, "name": "state_code", "tag": "State", "type": "uint16", "scale": 1},
    {
        "offset": 9,
        "name": "reason_code",
        "tag": "ReasonCode",
        "type": "uint16",
        "scale": 1,
    },
    {
        "offset": 10,
        "name": "temperature",
        "tag": "Temperature",
        "type": "int16",
        "scale": 10,
    },
    {"offset": 11, "name": "speed", "tag": "Speed", "type": "uint16", "scale": 10},
    {"offset": 12, "name": "plant_time", "tag": None, "type": "uint32", "scale": 1},
]
"""Per machine block: 32-bit values are two registers, high word first (big-endian), counters
are the PLC's (preset + pieces) mod 2^32 and roll over; `value = raw / scale` (temperature in
0.1 °C as signed int16, speed in 0.1 pieces/h); `plant_time` = epoch seconds of the snapshot."""


def machine_registers(store: ShopfloorStore, machine: str, ms: int) -> list[int]:
    """The 14 registers of one machine at plant instant `ms`."""
    regs = [0] * 14

    def u32(offset: int, value: int) -> None:
        value %= ROLLOVER
        regs[offset], regs[offset + 1] = value >> 16, value & 0xFFFF

    def last(tag: str) -> tuple[int, float | None, str | None, int] | None:
        return store.value_at(f"{machine}.{tag}", ms)

    for f in REGISTER_MAP:
        tag = f["tag"]
        if tag is None:
            u32(f["offset"], ms // 1000)
            continue
        row = last(tag)
        if f["type"] == "uint32":
            u32(
                f["offset"],
                store.presets.get((machine, tag), 0) + int(row[1] if row else 0),
            )
        elif tag == "State":
            regs[f["offset"]] = STATE_CODES.get(row[2], 0) if row else 0
        elif tag == "ReasonCode":
            regs[f["offset"]] = REASON_CODES.get(row[2] or "", 0) if row else 0
        else:
            raw = round((row[1] if row else 0.0) * f["scale"])
            regs[f["offset"]] = raw & 0xFFFF
    return regs


class ModbusPlcs:
    """The PLCs of every line on one Modbus TCP server."""

    def __init__(self, store: ShopfloorStore, clock: Any, host: str, port: int) -> None:
        self.store = store
        self.clock = clock
        self.host, self.port = host, port
        self.server: Any = None
        self.devices: dict[int, dict[int, str]] = {}
        for eq in store.equipment:
            self.devices.setdefault(eq["plc_device_id"], {})[eq["plc_block"]] = eq[
                "machine_code"
            ]

    def _action(self, device: int) -> Any:
        from pymodbus.constants import ExcCodes

        async def action(
            func_code: int,
            start_address: int,
            address: int,
            count: int,
            registers: list[int],
            values: Any,
        ) -> Any:
            if values is not None:
                return ExcCodes.ILLEGAL_FUNCTION
            ms = self.clock.now_ms()
            blocks: dict[int, list[int]] = {}
            for a in range(address, address + count):
                block, off = divmod(a, BLOCK)
                machine = self.devices[device].get(block)
                if machine is None or off >= 14:
                    value = 0
                else:
                    if block not in blocks:
                        blocks[block] = machine_registers(self.store, machine, ms)
                    value = blocks[block][off]
                registers[a - start_address] = value
            return None

        return action

    async def start(self) -> None:
        from pymodbus.server import ModbusTcpServer
        from pymodbus.simulator import DataType, SimData, SimDevice

        devices = [
            SimDevice(
                id=dev,
                simdata=[
                    SimData(
                        0,
                        count=BLOCK * (max(blocks) + 1),
                        values=0,
                        datatype=DataType.REGISTERS,
                    )
                ],
                action=self._action(dev),
            )
            for dev, blocks in sorted(self.devices.items())
        ]
        self.server = ModbusTcpServer(devices, address=(self.host, self.port))
        await self.server.serve_forever(background=True)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.shutdown()
