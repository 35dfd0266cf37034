"""The plant systems rendered during generation (besides the MES, which the world writes)."""

from __future__ import annotations

from typing import Any


def all_systems() -> list[Any]:
    """Instances of every system writer, in a fixed order (determinism)."""
    return []
