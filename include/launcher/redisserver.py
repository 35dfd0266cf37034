"""A project-private Redis (Debian's `redis-server`), the Celery broker of `make run EXECUTOR=celery`.

Like the private PostgreSQL: data in a project folder (var/<instance>/redis), its own port,
bound to 127.0.0.1, started detached and stopped by its pid file. Its password comes from the
instance's secrets file and reaches the server only through its configuration file (mode 0600),
never a command line; clients get it inside the broker URL from the environment.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from launcher.debian import apt_install


class RedisError(RuntimeError):
    """The private Redis could not be installed or started."""


def find_redis_server() -> str:
    """The `redis-server` binary, installing Debian's package with apt when it is missing and we
    may (root or sudo), as pgcluster does for PostgreSQL."""
    for attempt in range(2):
        found = shutil.which("redis-server") or (
            "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)
        if found:
            return found
        if attempt == 0:
            apt_install("redis-server", "redis-server missing")
    raise RedisError("redis-server not found and apt could not install it; install Debian's "
                     "'redis-server' package (needed by EXECUTOR=celery)")


@dataclass
class RedisServer:
    """A private Redis: `root` holds redis.conf (0600), its data (append-only file), pid and log."""

    root: Path
    port: int
    password: str = field(repr=False)  # never in a traceback's or a log's repr

    @property
    def config_file(self) -> Path:
        return self.root / "redis.conf"

    @property
    def pid_file(self) -> Path:
        return self.root / "redis.pid"

    @property
    def log_file(self) -> Path:
        return self.root / "redis.log"

    def url(self, db: int = 0) -> str:
        """The broker URL (it carries the password: environment only, never argv or a log)."""
        from urllib.parse import quote

        return f"redis://:{quote(self.password, safe='')}@127.0.0.1:{self.port}/{db}"

    def write_config(self) -> None:
        from launcher.settings import write_private

        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
        write_private(self.config_file, "\n".join([
            "# project-private Celery broker (include/launcher/redisserver.py)",
            "bind 127.0.0.1",
            "protected-mode yes",
            f"port {self.port}",
            f'requirepass "{self.password}"',
            "daemonize yes",
            f'pidfile "{self.pid_file}"',
            f'logfile "{self.log_file}"',
            f'dir "{self.root}"',
            # queued task messages survive a restart of the broker
            "appendonly yes",
            'save ""',
            "maxmemory-policy noeviction",
            "",
        ]))

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        try:  # a recycled pid is not our server
            if b"redis-server" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                return None
        except OSError:
            return None
        return pid

    def is_running(self) -> bool:
        return self.pid() is not None

    def start(self, timeout_s: float = 30) -> None:
        """Start unless running (the configuration is rewritten each time: a new password or
        port takes effect), then wait until it answers an authenticated PING."""
        if self.is_running():
            self.wait_ready(timeout_s)
            return
        binary = find_redis_server()
        self.write_config()
        # the launcher's own environment: no SFDP_INSTANCE marker, so `stop` ends the broker
        # after the workers, by its pid file, as it does the PostgreSQL cluster
        result = subprocess.run([binary, str(self.config_file)], cwd=self.root,
                                capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RedisError(f"redis-server did not start on 127.0.0.1:{self.port}: "
                             f"{result.stderr[-1000:]}")
        self.wait_ready(timeout_s)

    def wait_ready(self, timeout_s: float = 30) -> None:
        import redis

        deadline = time.monotonic() + timeout_s
        while True:
            try:
                client = redis.Redis(host="127.0.0.1", port=self.port, password=self.password,
                                     socket_connect_timeout=2)
                try:
                    if client.ping():
                        return
                finally:
                    client.close()
            except (redis.ConnectionError, redis.BusyLoadingError, OSError):
                pass
            if time.monotonic() > deadline:
                tail = self.log_file.read_text()[-1500:] if self.log_file.exists() else ""
                raise RedisError(f"Redis on 127.0.0.1:{self.port} did not answer within "
                                 f"{timeout_s:.0f} s (is the port taken?)\n{tail}")
            time.sleep(0.2)

    def stop(self, timeout_s: float = 30) -> None:
        """SIGTERM (Redis saves and exits cleanly), SIGKILL after `timeout_s`."""
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while self.pid() is not None:
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                time.sleep(0.5)
                break
            time.sleep(0.2)
