"""The host name a Celery worker of `make run EXECUTOR=celery` records on its task instances.

Several workers share this machine, so the machine's name alone would not tell them apart:
each worker's tasks record its Celery hostname, `worker<i>@<machine>` (the launcher sets
SFDP_WORKER_NAME and `[core] hostname_callable` in that worker's environment only).
"""

from __future__ import annotations

import os
import socket


def worker_hostname() -> str:
    name = os.environ.get("SFDP_WORKER_NAME")
    machine = socket.getfqdn()
    return f"{name}@{machine}" if name else machine
