"""Readers for the small world's dropped files (as a platform would parse them)."""

from __future__ import annotations

import csv
import io
from pathlib import Path


def drops(world: Path, system: str, prefix: str) -> list[Path]:
    return sorted((world / "drops" / system).glob(f"{prefix}*"))


def read_csv(path: Path, encoding: str = "utf-8") -> list[dict[str, str]]:
    text = path.read_bytes().decode(encoding)
    return list(csv.DictReader(io.StringIO(text, newline=""), delimiter=";"))
