"""OPC UA client: browse the server's ISA-95 address space once, then read every tag's history
(HistoryRead raw) for the window, status codes kept.

`open_extraction(source, entity, window)` resolves the Airflow connection `source.conn_id`,
connects (security as the connection says), browses the tree below `Objects/<root>` — levels
enterprise / site / area / line / machine, the machine's variables being its tags — and reads
the raw history of every tag in `[window.start, window.end)`: one HistoryRead request for many
nodes at a time (`nodes_per_request`), each node's continuation point followed until the
server has answered everything. Every value is read before the load's transaction opens (the
values are kept as compact tuples; a 15-minute window of a plant is a few thousand).

**The connection** (`conn_type` `opcua`; URI form `opcua://[login:password@]host:port/path?…`):

| field | meaning |
| --- | --- |
| host, port, schema | the endpoint `opc.tcp://host:port/schema` |
| login, password | a user identity token (UserName); none: anonymous. The password is the secret |
| extra `namespace_uri` | the namespace of the root's browse names (node ids are stored with their namespace URI: `nsu=…;s=…`) |
| extra `root` | the browse path below `Objects` to the enterprise folder (`ENT`; `/`-separated; empty: every folder below `Objects` but the standard's own) |
| extra `security_policy` | `None` (default), `Basic256Sha256`, `Aes128Sha256RsaOaep`, `Aes256Sha256RsaPss` |
| extra `security_mode` | `None` (default), `Sign`, `SignAndEncrypt` |
| extra `certificate`, `private_key` | paths (PEM or DER) of the client's application instance certificate and its key (the key file 0600, unencrypted) |
| extra `server_certificate` | path of the server's certificate to trust (pinned); without it the certificate the server presents in its endpoint list is used |
| extra `application_uri` | the client's application URI (must be the certificate's SubjectAltName URI) |
| extra `timeout_s`, `nodes_per_request` | request timeout (default 60 s), nodes per HistoryRead request (default 16) |
| extra `max_nodes`, `max_depth` | the most nodes the browse visits (default 100,000) and the deepest folder below `Objects` it enters (default 12; the ISA-95 tree needs 5 below its root) |

**A server that answers without end** (a misconfigured root, a generated or hostile address
space): the browse stops at `max_nodes` visited nodes or at a folder deeper than `max_depth`
and the extraction fails naming the bound — before any value is read, so nothing is loaded
and the refusal is a source incident; widen the bound in the connection if the plant is
really that large.

**Bad quality** (the rule; see the source's docstring): a value whose status is not Good is
kept with its status when it is analog (float/double), and quarantined with its status as the
reason when it is discrete (integer or string: counters, state, reason, operation).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from factory_platform.extract.load import Extraction, SourceRecord

log = logging.getLogger(__name__)

SECURITY_POLICIES = ("None", "Basic256Sha256", "Aes128Sha256RsaOaep", "Aes256Sha256RsaPss")
SECURITY_MODES = ("None", "Sign", "SignAndEncrypt")
# The built-in types whose bad values are dropped from raw into the quarantine: discrete
# values (a count or a state) are either right or not used; analog ones land flagged.
ANALOG_TYPES = ("Float", "Double")
ISA95_LEVELS = ("enterprise", "site", "area", "line", "machine")
GOOD_MASK = 0xC0000000  # the severity bits of a status code: 00 Good, 01 Uncertain, 10 Bad
# HistoryRead's "no value in the range": Part 11 lets a server say it as Good_NoData or as
# Bad_NoData (0x809B0000), so a quiet tag (a counter that did not change) is no error
BAD_NO_DATA = 0x809B0000


class OpcUaConfigError(RuntimeError):
    """The connection's settings do not describe a usable OPC UA endpoint."""


@dataclass(frozen=True)
class OpcUaEndpoint:
    """An OPC UA server reached through an Airflow connection."""

    conn_id: str
    url: str
    namespace_uri: str | None = None
    root: tuple[str, ...] = ()
    security_policy: str = "None"
    security_mode: str = "None"
    certificate: str | None = None
    private_key: str | None = None
    server_certificate: str | None = None
    application_uri: str | None = None
    login: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout_s: float = 60.0
    nodes_per_request: int = 16
    max_nodes: int = 100_000
    max_depth: int = 12

    def __post_init__(self) -> None:
        if self.security_policy not in SECURITY_POLICIES:
            raise OpcUaConfigError(f"{self.conn_id}: security_policy {self.security_policy!r}; "
                                   f"one of {SECURITY_POLICIES}")
        if self.security_mode not in SECURITY_MODES:
            raise OpcUaConfigError(f"{self.conn_id}: security_mode {self.security_mode!r}; "
                                   f"one of {SECURITY_MODES}")
        if (self.security_policy == "None") != (self.security_mode == "None"):
            raise OpcUaConfigError(f"{self.conn_id}: security_policy {self.security_policy} "
                                   f"with security_mode {self.security_mode}: both None or neither")
        for name in ("max_nodes", "max_depth", "nodes_per_request"):
            if getattr(self, name) < 1:
                raise OpcUaConfigError(f"{self.conn_id}: {name} {getattr(self, name)}; at least 1")
        if self.security_mode != "None" and not (self.certificate and self.private_key):
            raise OpcUaConfigError(f"{self.conn_id}: security mode {self.security_mode} needs "
                                   "the client's certificate and private_key (extra)")


@dataclass(frozen=True)
class Tag:
    """A variable found by the browse: a machine's tag and where it sits in the ISA-95 tree."""

    node_id: Any  # asyncua NodeId
    node_key: str  # nsu=<namespace uri>;s=<id> (independent of the server's namespace index)
    machine_code: str
    tag: str
    path: tuple[str, ...]  # browse names below Objects, the tag's own last

    def level(self, name: str) -> str | None:
        """The browse name at an ISA-95 level (below the root's parent), if the tree has it."""
        levels = self.path[:-1]
        if len(levels) != len(ISA95_LEVELS):
            return None
        return levels[ISA95_LEVELS.index(name)]


def endpoint_for(conn_id: str) -> OpcUaEndpoint:
    """The endpoint of an Airflow connection (see the module docstring for its fields)."""
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    extra = conn.extra_dejson or {}
    if not conn.host:
        raise OpcUaConfigError(f"connection {conn_id!r} has no host")
    path = (conn.schema or "").strip("/")
    url = f"opc.tcp://{conn.host}:{conn.port or 4840}" + (f"/{path}" if path else "")
    root = tuple(p for p in str(extra.get("root", "")).split("/") if p)
    return OpcUaEndpoint(
        conn_id=conn_id, url=url, namespace_uri=extra.get("namespace_uri"), root=root,
        security_policy=extra.get("security_policy", "None"),
        security_mode=extra.get("security_mode", "None"),
        certificate=extra.get("certificate"), private_key=extra.get("private_key"),
        server_certificate=extra.get("server_certificate"),
        application_uri=extra.get("application_uri"),
        login=conn.login or None, password=conn.password or None,
        timeout_s=float(extra.get("timeout_s", 60)),
        nodes_per_request=int(extra.get("nodes_per_request", 16)),
        max_nodes=_whole_number(conn_id, extra, "max_nodes", 100_000),
        max_depth=_whole_number(conn_id, extra, "max_depth", 12),
    )


def _whole_number(conn_id: str, extra: dict, name: str, default: int) -> int:
    """The connection extra's `name` as an int, or an error naming the connection."""
    value = extra.get(name, default)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise OpcUaConfigError(f"connection {conn_id!r}: extra {name} {value!r} is not a whole "
                               f"number") from None


def open_extraction(source, entity, window) -> Extraction:
    """Client entry point (see `extract.clients`): every tag's values in the window, read
    before this returns (the loader's transaction never waits on the server)."""
    endpoint = endpoint_for(source.conn_id)
    tags = None if entity.endpoint in ("", "*") else {
        t.strip() for t in entity.endpoint.split(",") if t.strip()}
    label = f"{endpoint.url} [{_iso(window.start)}, {_iso(window.end)})"
    history = asyncio.run(read_history(endpoint, window.start, window.end, tags))
    extraction = Extraction(records=[], source_label=label, empty_is_deletion=False)
    extraction.records = history.records(label, extraction.rejected)
    log.info("%s: browsed %d tags of %d machines; %d values for [%s, %s) in %d HistoryRead "
             "requests", endpoint.url, len(history.tags), len({t.machine_code for t in history.tags}),
             history.count, _iso(window.start), _iso(window.end), history.requests)
    return extraction


@dataclass
class History:
    """The values read: per tag, (source ms, server ms, variant type, value, status code)."""

    tags: list[Tag]
    values: dict[int, list[tuple]] = field(default_factory=dict)
    requests: int = 0

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.values.values())

    def records(self, label: str, rejected: list) -> Iterator[SourceRecord]:
        """The values as records (a bad discrete value appended to `rejected` instead)."""
        import json

        from asyncua.ua.status_codes import get_name_and_doc

        names: dict[int, str] = {}
        for index, tag in enumerate(self.tags):
            for source_ms, server_ms, vtype, value, code in self.values.get(index, ()):
                if code not in names:
                    names[code] = _status_name(code, get_name_and_doc)
                payload = {
                    "source_at": _from_ms(source_ms), "machine_code": tag.machine_code,
                    "tag": tag.tag, "site_code": tag.level("site"),
                    "area_code": tag.level("area"), "line_code": tag.level("line"),
                    "node_id": tag.node_key, "browse_path": "/".join(tag.path),
                    "value_type": vtype,
                    "value_text": _text(value),
                    "value_numeric": value if _is_number(value) else None,
                    "status_code": code, "status": names[code],
                    "server_at": _from_ms(server_ms) if server_ms is not None else None,
                }
                ref = f"{tag.machine_code}|{tag.tag}|{_iso(payload['source_at'])}"
                if code & GOOD_MASK and vtype not in ANALOG_TYPES:
                    reason = (f"status {names[code]} (0x{code:08X}) on a {vtype} value: a "
                              "discrete value (count, state) that is not Good is not used")
                    rejected.append((label, ref, reason, json.dumps(payload, default=str)))
                    continue
                yield SourceRecord(source=label, record_ref=ref, payload=payload)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, Decimal)) and not isinstance(value, bool)


def _text(value: Any) -> str | None:
    """A value that is not a number as text: strings as they are, booleans as true/false,
    anything else (arrays, localized text, date-times) as its string form."""
    if value is None or _is_number(value):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)


def _status_name(code: int, get_name_and_doc) -> str:
    try:
        return get_name_and_doc(code)[0]
    except Exception:  # noqa: BLE001 — a code the library does not know keeps its number
        return f"0x{code:08X}"


async def read_history(endpoint: OpcUaEndpoint, start: datetime, end: datetime,
                       tags: set[str] | None = None) -> History:
    """Browse once, then HistoryRead raw of every tag (or of the tags named) in [start, end)."""
    # Airflow's intervals are pendulum's; asyncua packs only the standard library's datetimes
    start, end = _plain(start), _plain(end)
    async with await _connect(endpoint) as client:
        found = await browse(client, endpoint)
        if tags is not None:
            found = [t for t in found if t.tag in tags]
        history = History(tags=found)
        await _read_raw(client, endpoint, history, start, end)
        return history


async def _connect(endpoint: OpcUaEndpoint):
    """A connected asyncua client (used as `async with`); security and identity as configured."""
    from asyncua import Client, ua
    from asyncua.crypto import security_policies

    library_log = logging.getLogger("asyncua")
    if library_log.getEffectiveLevel() < logging.WARNING:
        # asyncua logs every request (browse, history_read …) at INFO; the task's log keeps
        # the run's one summary line and the library's warnings
        library_log.setLevel(logging.WARNING)
    # the watchdog probes the server every `watchdog_intervall` and gives up after as long: a
    # server busy answering a large HistoryRead must not count as gone after asyncua's 1 s
    client = Client(endpoint.url, timeout=endpoint.timeout_s,
                    watchdog_intervall=endpoint.timeout_s)
    client.session_timeout = 600_000  # ms: a run's session is short; servers cap it about here
    if endpoint.application_uri:
        client.application_uri = endpoint.application_uri
    if endpoint.security_mode != "None":
        policy = getattr(security_policies, f"SecurityPolicy{endpoint.security_policy}")
        await client.set_security(
            policy, endpoint.certificate, endpoint.private_key,
            server_certificate=endpoint.server_certificate,
            mode=getattr(ua.MessageSecurityMode, endpoint.security_mode))
    if endpoint.login:
        client.set_user(endpoint.login)
        if endpoint.password:
            client.set_password(endpoint.password)
    return client


async def browse(client, endpoint: OpcUaEndpoint) -> list[Tag]:
    """Every variable below `Objects/<root>` (depth-first, in browse order), with its path."""
    from asyncua import ua

    ns_index = None
    if endpoint.namespace_uri:  # an unknown namespace fails here, naming it
        ns_index = await client.get_namespace_index(endpoint.namespace_uri)
    start = client.nodes.objects
    for name in endpoint.root:  # by browse name (in the namespace, when one is named)
        matches = [ref.NodeId for ref in await start.get_children_descriptions(
            refs=ua.ObjectIds.HierarchicalReferences) if ref.BrowseName.Name == name
            and ref.NodeId.NamespaceIndex != 0
            and ns_index in (None, ref.BrowseName.NamespaceIndex)]
        if len(matches) != 1:
            raise OpcUaConfigError(f"{endpoint.url}: {len(matches)} nodes named {name!r} on the "
                                   f"root's path Objects/{'/'.join(endpoint.root)}")
        start = client.get_node(matches[0])
    namespaces = await client.get_namespace_array()
    found: list[Tag] = []
    # hierarchical references may form cycles or reach a node by two paths (Organizes is
    # not a tree): each node is visited once, by the first path the browse finds
    seen = {start.nodeid.to_string()}

    where = f"{endpoint.url}: the address space below Objects/{'/'.join(endpoint.root)}"

    async def walk(node, path: tuple[str, ...]) -> None:
        # one Browse per object: each reference names its target's class and browse name
        for ref in await node.get_children_descriptions(refs=ua.ObjectIds.HierarchicalReferences):
            if ref.NodeId.NamespaceIndex == 0:
                continue  # the OPC UA standard's own nodes (Objects/Server …), not the plant's
            name = ref.BrowseName.Name
            nid = ua.NodeId(ref.NodeId.Identifier, ref.NodeId.NamespaceIndex, ref.NodeId.NodeIdType)
            if nid.to_string() in seen:
                continue
            if len(seen) >= endpoint.max_nodes:
                raise OpcUaConfigError(
                    f"{where} holds more than {endpoint.max_nodes} nodes (the connection's "
                    f"max_nodes); browsing stopped, nothing read")
            seen.add(nid.to_string())
            if ref.NodeClass == ua.NodeClass.Object:
                if len(path) + 1 > endpoint.max_depth:
                    raise OpcUaConfigError(
                        f"{where} goes deeper than {endpoint.max_depth} levels (the connection's "
                        f"max_depth) at {'/'.join((*path, name))[-200:]}; browsing stopped, "
                        f"nothing read")
                await walk(client.get_node(nid), (*path, name))
            elif ref.NodeClass == ua.NodeClass.Variable and path:
                key = f"nsu={namespaces[nid.NamespaceIndex]};{nid.to_string().split(';', 1)[-1]}"
                found.append(Tag(node_id=nid, node_key=key, machine_code=path[-1], tag=name,
                                 path=(*path, name)))

    await walk(start, endpoint.root)
    if not found:
        raise OpcUaConfigError(f"{endpoint.url}: no variables below Objects/"
                               f"{'/'.join(endpoint.root)} (check the connection's root)")
    return found


async def _read_raw(client, endpoint: OpcUaEndpoint, history: History, start: datetime,
                    end: datetime) -> None:
    """HistoryRead raw for every tag in [start, end): requests of `nodes_per_request` nodes,
    each node's continuation point followed. The server's range is inclusive at both ends; a
    value at `end` belongs to the next window and is left out here."""
    from asyncua import ua

    details = ua.ReadRawModifiedDetails(
        IsReadModified=False, StartTime=start.astimezone(UTC), EndTime=end.astimezone(UTC),
        NumValuesPerNode=0,  # as many as the server answers at once; the rest by continuation
        ReturnBounds=False)
    start_ms, end_ms = _ms(start), _ms(end)
    pending = {index: None for index in range(len(history.tags))}  # tag index → continuation
    while pending:
        batch = list(pending.items())[:endpoint.nodes_per_request]
        params = ua.HistoryReadParameters(
            HistoryReadDetails=details, TimestampsToReturn=ua.TimestampsToReturn.Both,
            ReleaseContinuationPoints=False,
            NodesToRead=[ua.HistoryReadValueId(NodeId=history.tags[i].node_id,
                                               ContinuationPoint=cp) for i, cp in batch])
        results = await client.uaclient.history_read(params)
        history.requests += 1
        for (index, previous), result in zip(batch, results, strict=True):
            tag = history.tags[index]
            rows = history.values.setdefault(index, [])
            if result.StatusCode.value == BAD_NO_DATA:
                pending.pop(index)  # the history has no value in the range: none, not an error
                continue
            if not result.StatusCode.is_good():
                raise RuntimeError(f"{endpoint.url}: HistoryRead of {tag.node_key} answered "
                                   f"{result.StatusCode.name}")
            for dv in result.HistoryData.DataValues or ():
                source_ms = _ms(dv.SourceTimestamp) if dv.SourceTimestamp else None
                if source_ms is None:
                    raise RuntimeError(f"{endpoint.url}: a value of {tag.node_key} without a "
                                       "source timestamp")
                if not start_ms <= source_ms < end_ms:
                    continue
                variant = dv.Value
                value = None if variant is None else variant.Value
                vtype = None if variant is None else variant.VariantType.name
                if isinstance(value, float):
                    value = Decimal(repr(value))
                code = dv.StatusCode.value if dv.StatusCode is not None else 0
                server_ms = _ms(dv.ServerTimestamp) if dv.ServerTimestamp else None
                rows.append((source_ms, server_ms, vtype, value, code))
            cont = result.ContinuationPoint
            if not cont:
                pending.pop(index)
            elif cont == previous:
                # a server that hands back the point it was given makes no progress: following
                # it could loop for ever, stopping here would load the node's history cut
                # short as if complete
                raise RuntimeError(f"{endpoint.url}: HistoryRead of {tag.node_key} answered the "
                                   "continuation point it was given")
            else:
                pending[index] = cont


def _plain(t: datetime) -> datetime:
    """`t` as the standard library's UTC datetime."""
    t = t.astimezone(UTC)
    return datetime(t.year, t.month, t.day, t.hour, t.minute, t.second, t.microsecond, tzinfo=UTC)


def _ms(t: datetime) -> int:
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return round(t.timestamp() * 1000)


def _from_ms(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")
