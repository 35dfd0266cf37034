"""Declared source fields and the parsing that decides whether a record may land in raw.

A value is parsed into the declared type; a record whose required field is missing or whose
value does not parse is rejected with a reason that names the field and the value.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

PG_TYPES = {
    "text": "text",
    "int": "bigint",
    "numeric": "numeric",
    "timestamptz": "timestamptz",
    "timestamp": "timestamp",  # local wall-clock time as delivered; staging converts to UTC
    "date": "date",
    "bool": "boolean",
    "json": "jsonb",
}


class RecordRejected(ValueError):
    """A record that cannot land: the message is the quarantine reason."""


@dataclass(frozen=True)
class Field:
    """One declared column of a source entity."""

    name: str
    type: str = "text"
    required: bool = False
    minimum: int | None = None  # e.g. 0 for quantities that cannot be negative
    description: str = ""  # for the dbt source's column (derived.py); else one from name and type

    def __post_init__(self) -> None:
        if self.type not in PG_TYPES:
            raise ValueError(f"field {self.name}: unknown type {self.type!r}")

    @property
    def pg_type(self) -> str:
        return PG_TYPES[self.type]


def _parse_int(value: Any) -> int:
    # ValueError throughout: the caller reports any of them as "not a valid integer"
    if isinstance(value, bool):
        raise ValueError  # noqa: TRY004
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError
        return int(value)
    text = str(value).strip()
    return int(text)


def _parse_numeric(value: Any) -> Decimal:
    if isinstance(value, bool):
        raise ValueError  # noqa: TRY004
    if isinstance(value, (int, Decimal)):
        return Decimal(value)
    number = Decimal(str(value).strip())
    if not number.is_finite():
        raise ValueError
    return number


def _parse_timestamptz(value: Any) -> datetime:
    text = str(value).strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError("no UTC offset")
    return parsed.astimezone(UTC)


def _parse_timestamp(value: Any) -> datetime:
    parsed = datetime.fromisoformat(str(value).strip())
    if parsed.tzinfo is not None:
        raise ValueError("expected local time without offset")
    return parsed


def _parse_date(value: Any) -> date:
    return date.fromisoformat(str(value).strip())


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "t", "1", "yes", "y"):
        return True
    if text in ("false", "f", "0", "no", "n"):
        return False
    raise ValueError


def _parse_json(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


PARSERS: dict[str, Callable[[Any], Any]] = {
    "text": lambda v: v if isinstance(v, str) else str(v),
    "int": _parse_int,
    "numeric": _parse_numeric,
    "timestamptz": _parse_timestamptz,
    "timestamp": _parse_timestamp,
    "date": _parse_date,
    "bool": _parse_bool,
    "json": _parse_json,
}


def parse_record(record: dict[str, Any], fields: tuple[Field, ...]) -> tuple[list[Any], dict]:
    """Return the declared values in field order and the undeclared extras, or raise."""
    values: list[Any] = []
    for field in fields:
        raw = record.get(field.name)
        if raw is None or (isinstance(raw, str) and raw.strip() == "" and field.type != "text"):
            if field.required:
                raise RecordRejected(f"required field '{field.name}' is missing or null")
            values.append(None)
            continue
        if isinstance(raw, str) and raw == "" and field.required:
            raise RecordRejected(f"required field '{field.name}' is empty")
        try:
            value = PARSERS[field.type](raw)
        except (ValueError, TypeError, InvalidOperation) as exc:
            detail = f" ({exc})" if str(exc) else ""
            raise RecordRejected(
                f"field '{field.name}': cannot read {str(raw)[:60]!r} as {field.type}{detail}"
            ) from None
        if field.minimum is not None and value < field.minimum:
            raise RecordRejected(f"field '{field.name}': {value} is below its minimum {field.minimum}")
        values.append(value)
    declared = {f.name for f in fields}
    extras = {k: v for k, v in record.items() if k not in declared}
    return values, extras
