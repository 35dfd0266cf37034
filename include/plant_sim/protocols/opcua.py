"""OPC UA server (asyncua): the ISA-95 address space of the plant, live values on the plant
clock and historical access (HistoryRead raw) answered from the world.

Address space (namespace `urn:sfdp:plant-sim`, index 2): `Objects/<enterprise>/<site>/<area>/
<line>/<machine>/<tag>`; a tag's NodeId is `ns=2;s=<machine>.<tag>` (`ERF-L1-M01.GoodCount`).
Tags: `State` (String), `ReasonCode` (String, "" while running), `OperationId` (String),
`GoodCount`, `ScrapCount`, `ReworkCount`, `TotalCount` (UInt64, cumulative since the world start),
`Speed` (Double, pieces per hour, 0 unless running), `Temperature` (Double, °C, one sample a
minute; some BadSensorFailure). Every tag is historizing; HistoryRead raw returns its changes in
`[start, end]` within the retention window (`retention_hours` before the plant clock) and never
beyond the clock; at most 1000 values an answer, the continuation point is the next value's
source timestamp.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from plant_sim.protocols.store import ShopfloorStore

NAMESPACE = "urn:sfdp:plant-sim"
TAGS: dict[str, str] = {
    "State": "String",
    "ReasonCode": "String",
    "OperationId": "String",
    "GoodCount": "UInt64",
    "ScrapCount": "UInt64",
    "ReworkCount": "UInt64",
    "TotalCount": "UInt64",
    "Speed": "Double",
    "Temperature": "Double",
}
"""Tag → OPC UA built-in type."""
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
HISTORY_PAGE = 1000
"""Values per HistoryRead answer; more come with a continuation point."""


def _ts(ms: int) -> dt.datetime:
    return EPOCH + dt.timedelta(milliseconds=ms)


def _ms(t: dt.datetime) -> int:
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return round((t - EPOCH).total_seconds() * 1000)


def datavalue(tag: str, row: tuple[int, float | None, str | None, int] | None) -> Any:
    """A point as an OPC UA DataValue (source timestamp = the plant instant of the change)."""
    from asyncua import ua

    vtype = getattr(ua.VariantType, TAGS[tag])
    if row is None:
        value: Any = "" if TAGS[tag] == "String" else 0
        return ua.DataValue(
            ua.Variant(value if TAGS[tag] != "Double" else 0.0, vtype),
            StatusCode=ua.StatusCode(ua.StatusCodes.BadNoData),
        )
    ms, num, txt, status = row
    if TAGS[tag] == "String":
        value = txt or ""
    elif TAGS[tag] == "UInt64":
        value = int(num or 0)
    else:
        value = float(num or 0.0)
    ts = _ts(ms)
    return ua.DataValue(
        ua.Variant(value, vtype),
        StatusCode=ua.StatusCode(status),
        SourceTimestamp=ts,
        ServerTimestamp=ts,
    )


def make_storage(
    store: ShopfloorStore, clock: Any, nodes: dict[Any, str], retention_ms: int
) -> Any:
    """A HistoryStorageInterface answering raw reads from the world (nothing is stored)."""
    from asyncua.server.history import HistoryStorageInterface

    class WorldHistory(HistoryStorageInterface):
        async def init(self) -> None:
            return None

        async def new_historized_node(
            self, node_id: Any, period: Any, count: int = 0
        ) -> None:
            return None

        async def save_node_value(self, node_id: Any, datavalue: Any) -> None:
            return None  # the world is the history

        async def read_node_history(
            self, node_id: Any, start: Any, end: Any, nb_values: int
        ) -> tuple[list[Any], Any]:
            from asyncua import ua

            name = nodes.get(node_id)
            if name is None:
                return [], None
            now = clock.now_ms()
            lo, hi = now - retention_ms, now
            win = ua.get_win_epoch()
            a = lo if start is None or start == win else max(lo, _ms(start))
            b = hi if end is None or end == win else min(hi, _ms(end))
            if a > b:
                return [], None
            cap = self.max_history_data_response_size
            limit = min(nb_values, cap) if nb_values else cap
            rows = store.history(name, a, b, limit + 1)
            cont = None
            if len(rows) > limit:
                if not nb_values or nb_values > cap:
                    cont = _ts(rows[limit][0])
                rows = rows[:limit]
            tag = name.split(".", 1)[1]
            return [datavalue(tag, r) for r in rows], cont

        async def new_historized_event(self, *args: Any, **kwargs: Any) -> None:
            return None

        async def save_event(self, event: Any) -> None:
            return None

        async def read_event_history(
            self, *args: Any, **kwargs: Any
        ) -> tuple[list[Any], Any]:
            return [], None

        async def stop(self) -> None:
            return None

    return WorldHistory(max_history_data_response_size=HISTORY_PAGE)


class OpcUaServer:
    """The plant's OPC UA server (security None; anonymous), run in the protocols' event loop."""

    def __init__(
        self,
        store: ShopfloorStore,
        clock: Any,
        host: str,
        port: int,
        retention_hours: float = 48.0,
    ) -> None:
        self.store = store
        self.clock = clock
        self.host, self.port = host, port
        self.retention_ms = int(retention_hours * 3600 * 1000)
        self.server: Any = None
        self.variables: dict[str, Any] = {}  # "<machine>.<tag>" → Node
        self.last: dict[str, int] = {}

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}/plant"

    async def start(self) -> None:
        from asyncua import Server, ua

        server = Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("plant_sim OPC UA")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        idx = await server.register_namespace(NAMESPACE)
        folders: dict[tuple[str, ...], Any] = {}

        async def folder(path: tuple[str, ...]) -> Any:
            if path not in folders:
                parent = (
                    server.nodes.objects if len(path) == 1 else await folder(path[:-1])
                )
                folders[path] = await parent.add_object(
                    ua.NodeId("/".join(path), idx), ua.QualifiedName(path[-1], idx)
                )
            return folders[path]

        now = self.clock.now_ms()
        for eq in self.store.equipment:
            m = eq["machine_code"]
            path = (
                eq["enterprise"],
                eq["site_code"],
                eq["area_code"],
                eq["line_code"],
                m,
            )
            obj = await folder(path)
            for tag, vt in TAGS.items():
                name = f"{m}.{tag}"
                row = self.store.value_at(name, now)
                dv = datavalue(tag, row)
                var = await obj.add_variable(
                    ua.NodeId(name, idx),
                    ua.QualifiedName(tag, idx),
                    dv.Value.Value,
                    getattr(ua.VariantType, vt),
                )
                await var.write_attribute(
                    ua.AttributeIds.Historizing,
                    ua.DataValue(ua.Variant(True, ua.VariantType.Boolean)),
                )
                await var.set_attr_bit(
                    ua.AttributeIds.AccessLevel, ua.AccessLevel.HistoryRead
                )
                await var.set_attr_bit(
                    ua.AttributeIds.UserAccessLevel, ua.AccessLevel.HistoryRead
                )
                await server.write_attribute_value(var.nodeid, dv)
                self.variables[name] = var
                self.last[name] = row[0] if row else -1
        nodes = {v.nodeid: name for name, v in self.variables.items()}
        server.iserver.history_manager.set_storage(
            make_storage(self.store, self.clock, nodes, self.retention_ms)
        )
        await server.start()
        self.server = server

    async def tick(self) -> None:
        """Bring every tag to its value at the plant clock (source timestamp = the change)."""
        now = self.clock.now_ms()
        for name, var in self.variables.items():
            row = self.store.value_at(name, now)
            if row is not None and row[0] != self.last[name]:
                self.last[name] = row[0]
                await self.server.write_attribute_value(
                    var.nodeid, datavalue(name.split(".", 1)[1], row)
                )

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
