"""Deterministic random streams: one independent `random.Random` per purpose.

Streams are derived from the seed and string labels with SHA-256, never from `hash()`
(which is salted per process), so the same seed and labels always give the same numbers.
"""

from __future__ import annotations

import hashlib
import random


def stream(seed: int, *labels: object) -> random.Random:
    """Return a Random seeded from `seed` and `labels` (order matters)."""
    key = "\x1f".join([str(seed), *(str(label) for label in labels)]).encode()
    return random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))
