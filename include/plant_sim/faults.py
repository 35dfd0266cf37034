"""Delivery faults: the plant misbehaving the way real source systems do (README "Faults").

Defects (`defects.py`) damage records; faults damage *delivery* and never change what happened:
a file written in place in chunks, a late file, a broken re-delivery of an already delivered
file, an API answer that stalls, comes back empty, repeats its cursor or is cut off. Every fault
is transient or repairable, so a correct platform still loses nothing.

Faults are switched per source system in `[faults.<system>]` tables of the world TOML or of a
file passed to `serve`/`up --faults`. Which file or request is hit is decided like the defects:
a kind with rate r hits every (1/r)-th eligible file/request from a seeded phase, at most `max`
times. File faults are planned from the seed and the drop index before serving; API faults
follow the order requests arrive in. Every injected fault is journaled (one row per hit file or
request) in `<inbox>/.plant_sim_faults.csv`, with the columns of `truth.injected_defects`, and
copied into `truth.injected_defects` when the runtime has a truth DSN.
"""

from __future__ import annotations

import csv
import io
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plant_sim import rng as rngmod
from plant_sim.timeutil import iso

FILE_SYSTEMS = ("wms", "scada", "ems", "plm")
API_SYSTEMS = ("mes", "qms")

KINDS: dict[str, tuple[str, str, str]] = {
    # kind: (config key prefix, action of a correct platform, what is wrong)
    "file_partial": (
        "partial",
        "wait",
        "written in place under its final name in chunks over time: take it once complete",
    ),
    "file_late": (
        "late",
        "wait",
        "delivered hours after its period (maybe beyond the lookback): load it when it comes",
    ),
    "file_broken_redelivery": (
        "broken",
        "set_aside",
        (
            "the same file name delivered again truncated or empty after the original: "
            "keep the original records"
        ),
    ),
    "api_stall": (
        "stall",
        "retry",
        "headers sent, then the body drips a few bytes per second: bound the whole request",
    ),
    "api_empty": (
        "empty",
        "retry",
        "200 with no records for a window that has records: do not accept, retry",
    ),
    "api_stuck_cursor": (
        "stuck_cursor",
        "retry",
        "next_cursor equals the cursor sent, same page again: detect the loop, retry later",
    ),
    "api_malformed_json": (
        "malformed",
        "retry",
        "200 with a truncated JSON body: retry",
    ),
}
"""fault kind → (config key prefix, action, description)."""

FILE_KINDS = ("file_partial", "file_late", "file_broken_redelivery")
API_KINDS = ("api_stall", "api_empty", "api_stuck_cursor", "api_malformed_json")

# key → (type, default); `<prefix>_rate` and `<prefix>_max` exist for every kind.
_FILE_PARAMS: dict[str, tuple[type, Any]] = {
    "partial_chunks": (int, 4),
    "partial_chunk_seconds": (float, 5.0),
    "late_hours": (float, 6.0),
    "broken_after_minutes": (float, 30.0),
    "broken_mode": (str, "alternate"),
}
_API_PARAMS: dict[str, tuple[type, Any]] = {
    "stall_seconds": (float, 10.0),
    "stall_bytes_per_second": (float, 4.0),
    "stuck_cursor_repeats": (int, 5),
}
BROKEN_MODES = ("truncated", "empty", "alternate")

JOURNAL_COLUMNS = (
    "defect_id",
    "kind",
    "system",
    "entity",
    "record_id",
    "file_name",
    "action",
    "detail",
)
"""The journal's columns: exactly those of `truth.injected_defects`."""


def _keys_for(kinds: tuple[str, ...], params: dict[str, tuple[type, Any]]) -> set[str]:
    keys = set(params)
    for k in kinds:
        keys |= {f"{KINDS[k][0]}_rate", f"{KINDS[k][0]}_max"}
    return keys


FILE_KEYS = _keys_for(FILE_KINDS, _FILE_PARAMS)
API_KEYS = _keys_for(API_KINDS, _API_PARAMS)


def parse_spec(raw: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Validate a `[faults.<system>]` mapping; returns {system: {key: value}} (given keys only,
    systems with no key dropped). Raises ValueError for an unknown system/key or a bad value."""
    out: dict[str, dict[str, Any]] = {}
    for system, table in (raw or {}).items():
        if system in FILE_SYSTEMS:
            allowed, params = FILE_KEYS, _FILE_PARAMS
        elif system in API_SYSTEMS:
            allowed, params = API_KEYS, _API_PARAMS
        else:
            raise ValueError(
                f"faults: unknown system {system!r} "
                f"(files: {', '.join(FILE_SYSTEMS)}; APIs: {', '.join(API_SYSTEMS)})"
            )
        if not isinstance(table, dict):
            raise ValueError(f"faults.{system} must be a table")  # noqa: TRY004
        unknown = set(table) - allowed
        if unknown:
            raise ValueError(
                f"faults.{system}: unknown key(s) {sorted(unknown)}; allowed {sorted(allowed)}"
            )
        clean: dict[str, Any] = {}
        for key, value in sorted(table.items()):
            if key.endswith("_rate"):
                v: Any = float(value)
                if not 0.0 <= v <= 1.0:
                    raise ValueError(f"faults.{system}.{key} must be within 0..1")
            elif key.endswith("_max"):
                v = int(value)
                if v < 0:
                    raise ValueError(f"faults.{system}.{key} must be >= 0")
            else:
                typ = params[key][0]
                v = typ(value)
                if typ in (int, float) and v < 0:
                    raise ValueError(f"faults.{system}.{key} must be >= 0")
            clean[key] = v
        if clean.get("partial_chunks", 2) < 2:
            raise ValueError(f"faults.{system}.partial_chunks must be >= 2")
        if clean.get("stuck_cursor_repeats", 2) < 2:
            raise ValueError(f"faults.{system}.stuck_cursor_repeats must be >= 2")
        if clean.get("broken_mode", "alternate") not in BROKEN_MODES:
            raise ValueError(
                f"faults.{system}.broken_mode must be one of {BROKEN_MODES}"
            )
        if clean:
            out[system] = clean
    return out


def load_spec(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read the `[faults.*]` tables of a TOML file (a world config or a faults-only file)."""
    import tomllib

    raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    return parse_spec(raw.get("faults", {}))


def param(spec: dict[str, Any], key: str) -> Any:
    """A parameter of one system's spec, or its default."""
    defaults = {**_FILE_PARAMS, **_API_PARAMS}
    return spec.get(key, defaults[key][1])


class Sampler:
    """Systematic sampling as for defects: every (1/rate)-th eligible item, seeded phase,
    at most `max_hits` (None: unlimited)."""

    def __init__(self, rate: float, max_hits: int | None, phase: float) -> None:
        self.rate = rate
        self.max_hits = max_hits
        self.acc = phase
        self.eligible = 0
        self.hits = 0

    @classmethod
    def for_kind(
        cls, seed: int, system: str, kind: str, spec: dict[str, Any]
    ) -> Sampler:
        prefix = KINDS[kind][0]
        phase = rngmod.stream(seed, "fault-phase", system, kind).random()
        return cls(
            float(spec.get(f"{prefix}_rate", 0.0)), spec.get(f"{prefix}_max"), phase
        )

    @property
    def active(self) -> bool:
        return self.rate > 0 and (self.max_hits is None or self.hits < self.max_hits)

    def hit(self) -> bool:
        """Count one eligible item; True if it gets the fault."""
        if not self.active:
            return False
        self.eligible += 1
        before = int(self.acc)
        self.acc += self.rate
        if int(self.acc) > before:
            self.hits += 1
            return True
        return False


# ---- files --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """One thing the dropper does at plant time `at`: deliver a file (`normal`, `partial`) or
    re-deliver it broken (`truncated`, `empty`)."""

    at: int
    system: str
    name: str
    due: int  # the file's own available_at (index)
    mode: str = "normal"
    late: bool = False
    chunks: int = 0
    chunk_seconds: float = 0.0

    @property
    def broken(self) -> bool:
        return self.mode in ("truncated", "empty")

    @property
    def key(self) -> str:
        """Ledger key: `system/name`, `system/name#broken` for a broken re-delivery."""
        base = f"{self.system}/{self.name}"
        return base + "#broken" if self.broken else base


def plan_deliveries(
    index: list[tuple[int, str, str]],
    spec: dict[str, dict[str, Any]],
    seed: int,
) -> list[Delivery]:
    """The dropper's schedule for `index` (sorted (available_at, system, name)) under `spec`.
    Without file faults: one `normal` delivery per file at its available_at, in index order."""
    samplers = {
        (system, kind): Sampler.for_kind(seed, system, kind, spec.get(system, {}))
        for system in FILE_SYSTEMS
        for kind in FILE_KINDS
    }
    broken_seq: dict[str, int] = {}
    out: list[Delivery] = []
    for at, system, name in index:
        s = spec.get(system, {})
        when, late = at, False
        if samplers[(system, "file_late")].hit():
            when, late = at + round(param(s, "late_hours") * 3600), True
        if samplers[(system, "file_partial")].hit():
            out.append(
                Delivery(
                    when,
                    system,
                    name,
                    at,
                    "partial",
                    late,
                    int(param(s, "partial_chunks")),
                    float(param(s, "partial_chunk_seconds")),
                )
            )
        else:
            out.append(Delivery(when, system, name, at, "normal", late))
        if samplers[(system, "file_broken_redelivery")].hit():
            mode = param(s, "broken_mode")
            if mode == "alternate":
                n = broken_seq.get(system, 0)
                broken_seq[system] = n + 1
                mode = "truncated" if n % 2 == 0 else "empty"
            after = round(param(s, "broken_after_minutes") * 60)
            out.append(Delivery(when + max(after, 1), system, name, at, mode))
    # stable: a file's re-delivery stays after its delivery
    return [d for _i, d in sorted(enumerate(out), key=lambda p: (p[1].at, p[0]))]


def broken_bytes(data: bytes, mode: str) -> bytes:
    """The broken re-delivery of `data`: empty, or cut off mid-row (never at a line end)."""
    if mode == "empty" or len(data) < 2:
        return b""
    cut = max(1, len(data) * 3 // 5)
    while cut > 1 and data[cut - 1 : cut] == b"\n":
        cut -= 1
    return data[:cut]


# ---- APIs ---------------------------------------------------------------------------------


@dataclass
class ApiDecision:
    """What to do with one data request: `kind` and its parameters."""

    kind: str
    seconds: float = 0.0
    bytes_per_second: float = 0.0
    next_cursor: str | None = None


@dataclass
class _Episode:
    remaining: int
    total: int


class ApiFaults:
    """Decides, per data request of one API, whether it is stalled, emptied, stuck or cut off.

    A request (method + path + query) hit by a kind is never hit by that kind again, so a retry
    gets the right answer; a stuck-cursor episode answers `stuck_cursor_repeats` requests with the
    same page and `next_cursor` = the cursor sent, then answers correctly.
    """

    def __init__(
        self,
        system: str,
        spec: dict[str, Any],
        seed: int,
        journal: FaultJournal | None = None,
    ) -> None:
        self.system = system
        self.spec = dict(spec)
        self.journal = journal
        self.lock = threading.Lock()
        self.samplers = {k: Sampler.for_kind(seed, system, k, spec) for k in API_KINDS}
        self.seen: dict[str, set[str]] = {k: set() for k in API_KINDS}
        self.episodes: dict[str, _Episode] = {}
        self.counts: dict[str, int] = {k: 0 for k in API_KINDS}

    def arm(self, kind: str, count: int, **params: Any) -> None:
        """Hit the next `count` eligible requests with `kind` (admin endpoint)."""
        prefix = KINDS[kind][0]
        with self.lock:
            for key, value in params.items():
                full = f"{prefix}_{key}"
                if full not in _API_PARAMS:
                    raise ValueError(f"unknown parameter {key!r} for {kind}")
                self.spec[full] = _API_PARAMS[full][0](value)
            s = self.samplers[kind]
            s.rate, s.acc, s.max_hits = 1.0, 0.0, s.hits + count

    def disarm(self) -> None:
        """No further faults (admin reset); counts are kept."""
        with self.lock:
            for s in self.samplers.values():
                s.rate = 0.0
            self.episodes.clear()

    def decide(
        self,
        entity: str,
        target: str,
        window: str,
        cursor_sent: str | None,
        records: int,
    ) -> ApiDecision | None:
        """The fault for this request, or None. `target` identifies the request (path+query),
        `window` the same without the cursor. A stuck cursor needs a request with a cursor (a
        follow-up page): it answers that page again with `next_cursor` = the cursor sent."""
        with self.lock:
            ep_key = f"{window}|{cursor_sent}"
            ep = self.episodes.get(ep_key)
            if ep is not None:
                ep.remaining -= 1
                if ep.remaining <= 0:
                    del self.episodes[ep_key]
                self.seen["api_stuck_cursor"].add(target)
                n = ep.total - ep.remaining
                return self._hit(
                    "api_stuck_cursor",
                    entity,
                    target,
                    f"next_cursor repeated ({n} of {ep.total})",
                    ApiDecision("api_stuck_cursor", next_cursor=cursor_sent),
                )
            eligible = {
                "api_empty": records > 0,
                "api_stuck_cursor": cursor_sent is not None,
                "api_malformed_json": True,
                "api_stall": True,
            }
            for kind in (
                "api_empty",
                "api_stuck_cursor",
                "api_malformed_json",
                "api_stall",
            ):
                if not eligible[kind] or target in self.seen[kind]:
                    continue
                if not self.samplers[kind].hit():
                    continue
                self.seen[kind].add(target)
                if kind == "api_empty":
                    return self._hit(
                        kind,
                        entity,
                        target,
                        f"answered no records; the true page has {records}",
                        ApiDecision(kind),
                    )
                if kind == "api_stuck_cursor":
                    total = int(param(self.spec, "stuck_cursor_repeats"))
                    self.episodes[ep_key] = _Episode(total - 1, total)
                    return self._hit(
                        kind,
                        entity,
                        target,
                        f"next_cursor repeated (1 of {total})",
                        ApiDecision(kind, next_cursor=cursor_sent),
                    )
                if kind == "api_malformed_json":
                    return self._hit(
                        kind, entity, target, "JSON body cut off", ApiDecision(kind)
                    )
                seconds = float(param(self.spec, "stall_seconds"))
                bps = float(param(self.spec, "stall_bytes_per_second"))
                return self._hit(
                    kind,
                    entity,
                    target,
                    f"body dripped at {bps:g} B/s for {seconds:g} s",
                    ApiDecision(kind, seconds, bps),
                )
        return None

    def _hit(
        self, kind: str, entity: str, target: str, detail: str, d: ApiDecision
    ) -> ApiDecision:
        self.counts[kind] += 1
        if self.journal is not None:
            self.journal.record(
                kind, self.system, entity, record_id=target, detail=detail
            )
        return d


# ---- journal ------------------------------------------------------------------------------


@dataclass
class FaultJournal:
    """Injected faults, one row per hit file or request, in `path` (CSV, the columns of
    `truth.injected_defects`, ids from `first_id`) and optionally in `truth.injected_defects`."""

    path: Path
    first_id: int
    clock: Any
    truth_dsn: str | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.dirty = False
        if self.path.exists():
            with open(self.path, encoding="utf-8", newline="") as fh:
                self.rows = list(csv.DictReader(fh))
            self.dirty = bool(self.rows)

    def record(
        self,
        kind: str,
        system: str,
        entity: str,
        record_id: str | None = None,
        file_name: str | None = None,
        detail: str | None = None,
        once: bool = False,
    ) -> bool:
        """Append one injected fault (with `once`: unless this kind already hit this file)."""
        with self.lock:
            if once and any(
                r["kind"] == kind
                and r["system"] == system
                and r["file_name"] == file_name
                for r in self.rows
            ):
                return False
            row = {
                "defect_id": self.first_id + len(self.rows),
                "kind": kind,
                "system": system,
                "entity": entity,
                "record_id": record_id or "",
                "file_name": file_name or "",
                "action": KINDS[kind][1],
                "detail": f"{detail or KINDS[kind][2]} (plant clock {iso(self.clock.now())})",
            }
            new = not self.path.exists()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8", newline="") as fh:
                w = csv.writer(fh, lineterminator="\n")
                if new:
                    w.writerow(JOURNAL_COLUMNS)
                w.writerow([row[c] for c in JOURNAL_COLUMNS])
            self.rows.append({k: str(v) for k, v in row.items()})
            self.dirty = True
            return True

    def snapshot(self, system: str | None = None) -> list[dict[str, Any]]:
        """The rows (of one system), `defect_id` as int, empty text as None."""
        with self.lock:
            rows = [
                dict(r) for r in self.rows if system is None or r["system"] == system
            ]
        for r in rows:
            r["defect_id"] = int(r["defect_id"])
            for k in ("record_id", "file_name"):
                r[k] = r[k] or None
        return rows

    def counts(self, system: str | None = None) -> dict[str, int]:
        """Injected faults per kind."""
        out: dict[str, int] = {}
        for r in self.snapshot(system):
            out[r["kind"]] = out.get(r["kind"], 0) + 1
        return dict(sorted(out.items()))

    def sync(self) -> int:
        """Replace the fault rows (defect_id >= first_id) of `truth.injected_defects` with the
        journal; returns rows written (0 without a DSN or when nothing changed)."""
        if not self.truth_dsn or not self.dirty:
            return 0
        import psycopg

        with self.lock:
            rows = [dict(r) for r in self.rows]
            self.dirty = False
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        for r in rows:
            w.writerow([r[c] for c in JOURNAL_COLUMNS])
        try:
            with psycopg.connect(self.truth_dsn, connect_timeout=5) as conn:
                conn.execute(
                    "DELETE FROM truth.injected_defects WHERE defect_id >= %s",
                    (self.first_id,),
                )
                cols = ", ".join(JOURNAL_COLUMNS)
                with conn.cursor().copy(
                    f"COPY truth.injected_defects ({cols}) FROM STDIN WITH (FORMAT csv)"
                ) as copy:
                    copy.write(buf.getvalue())
        except Exception:
            self.dirty = True
            raise
        return len(rows)
