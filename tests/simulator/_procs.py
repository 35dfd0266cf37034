"""What the CLI and stop tests share: the plant run as its own process (`python -m plant_sim`)
with the project's `include/` on its path, the small config, and a free local port."""

from __future__ import annotations

import os
import socket
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(ROOT / "include"))
SMALL = ROOT / "include" / "plant_sim" / "configs" / "small.toml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
