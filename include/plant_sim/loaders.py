"""`load`: put a generated world's truth (and ERP/EAM databases) into Postgres."""

from __future__ import annotations

from pathlib import Path

from plant_sim.truth import load_truth


def load_world(world: Path, truth_dsn: str, erp_dsn: str | None = None,
               eam_dsn: str | None = None) -> dict[str, dict[str, int]]:
    """Load truth into `truth_dsn`; ERP/EAM tables into their databases when DSNs are given."""
    out: dict[str, dict[str, int]] = {"truth": load_truth(world, truth_dsn)}
    return out
