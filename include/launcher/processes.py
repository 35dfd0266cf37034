"""Start detached services and stop exactly those: every process we start carries a marker.

Each service runs in its own session (`setsid`) with `SFDP_INSTANCE=<var dir>` in its
environment; children inherit it. Stopping signals the recorded process groups first and then
any process still carrying the marker (Airflow's task runners start their own groups), so
nothing we started is left behind — and nothing else is touched.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def start_service(name: str, cmd: list[str], env: dict[str, str], pid_dir: Path,
                  log_dir: Path, cwd: Path) -> int:
    """Start `cmd` detached unless it is already running; return its pid."""
    pid_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    pid_file = pid_dir / f"{name}.pid"
    existing = _read_pid(pid_file)
    if existing and _alive(existing):
        return existing
    with open(log_dir / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(
            cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
    pid_file.write_text(str(proc.pid))
    return proc.pid


def service_alive(name: str, pid_dir: Path) -> bool:
    pid = _read_pid(pid_dir / f"{name}.pid")
    return bool(pid and _alive(pid))


def _parent_map() -> dict[int, int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat_fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if stat_fields[0] != "Z":
                parents[int(entry.name)] = int(stat_fields[1])
    return parents


def marked_processes(marker: str, pid_dir: Path | None = None) -> list[int]:
    """Live processes we started: those whose environment has SFDP_INSTANCE=<marker>, the
    recorded service pids, and every descendant of either (Airflow's workers rewrite their
    process title, which hides their environment, but they stay children of our services)."""
    needle = f"SFDP_INSTANCE={marker}".encode()
    parents = _parent_map()
    roots = set()
    for pid in parents:
        if pid == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            roots.add(pid)
    if pid_dir is not None and pid_dir.exists():
        for pid_file in pid_dir.glob("*.pid"):
            pid = _read_pid(pid_file)
            if pid in parents:
                roots.add(pid)
    found = set(roots)
    changed = True
    while changed:
        children = {pid for pid, ppid in parents.items() if ppid in found} - found
        changed = bool(children)
        found |= children
    found.discard(os.getpid())
    return sorted(found)


def tree(pid: int) -> list[int]:
    """`pid` and every live descendant of it (a service with the processes it started)."""
    parents = _parent_map()
    found = {pid} if pid in parents else set()
    changed = bool(found)
    while changed:
        children = {p for p, ppid in parents.items() if ppid in found} - found
        changed = bool(children)
        found |= children
    return sorted(found)


def stop_service(name: str, pid_dir: Path, timeout_s: float = 10) -> list[int]:
    """TERM one service started by start_service (its process group and every descendant),
    KILL what is left after `timeout_s`; return leftovers."""
    pid = _read_pid(pid_dir / f"{name}.pid")
    ours = set(tree(pid)) if pid else set()
    _term_group(pid)
    leftovers = _terminate(ours, lambda left: left & set(_parent_map()), timeout_s, 0.2)
    (pid_dir / f"{name}.pid").unlink(missing_ok=True)
    return leftovers


def stop_all(marker: str, pid_dir: Path, timeout_s: float = 30) -> list[int]:
    """TERM every recorded group and marked process, then KILL what is left; return leftovers."""
    ours = set(marked_processes(marker, pid_dir))  # the whole tree, before anything exits
    for pid_file in sorted(pid_dir.glob("*.pid")) if pid_dir.exists() else []:
        _term_group(_read_pid(pid_file))
    leftovers = _terminate(
        ours, lambda left: (left | set(marked_processes(marker, pid_dir))) & set(_parent_map()),
        timeout_s, 0.5)
    for pid_file in pid_dir.glob("*.pid") if pid_dir.exists() else []:
        pid_file.unlink()
    return leftovers


def _term_group(pid: int | None) -> None:
    """TERM the process group a service leads (start_service starts each in its own)."""
    if pid and _alive(pid):
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def _terminate(ours: set[int], still_ours, timeout_s: float, poll_s: float) -> list[int]:
    """TERM `ours`, wait up to `timeout_s` while `still_ours(left)` says who is left, KILL
    those; return the pids that outlived even that."""
    for pid in ours:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while ours and time.monotonic() < deadline:
        ours = still_ours(ours)
        if not ours:
            break
        time.sleep(poll_s)
    for pid in ours:
        _signal(pid, signal.SIGKILL)
    if ours:
        time.sleep(0.5)
    return [pid for pid in ours if pid in _parent_map()]


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        return state != "Z"
    except OSError:
        return False


def pss_kib(pid: int) -> int:
    """Proportional set size of a process in KiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0
