"""plant_sim — a deterministic simulated smart factory behind real interfaces.

Generates one coherent world from a seed and a TOML config, serves it (MES HTTP, ERP/EAM
Postgres, file drops, QMS HTTP) and records the truth. Never imports the platform.
"""

__version__ = "0.1.0"
