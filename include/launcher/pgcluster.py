"""A project-private PostgreSQL cluster started from the machine's server binaries.

PostgreSQL refuses to run as root. When we are root, the cluster's files belong to the
`postgres` system user (created by Debian's package) and every server command runs through
`runuser`; otherwise they run as the current user. Data lives in an ignored project folder.
"""

from __future__ import annotations

import glob
import os
import shutil
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from launcher.debian import apt_install

SERVER_USER = "postgres"


class ClusterError(RuntimeError):
    """The private cluster could not be prepared or started."""


def find_server_bindir() -> Path:
    """Return the newest installed PostgreSQL server bin folder, installing it with apt if absent."""
    for attempt in range(2):
        candidates = sorted(
            (Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")),
            key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        )
        if candidates:
            return candidates[-1]
        if os.environ.get("PG_BINDIR"):
            return Path(os.environ["PG_BINDIR"])
        if attempt == 0:
            apt_install("postgresql", "PostgreSQL server binaries missing")
    raise ClusterError(
        "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin and apt could not "
        "install them; install Debian's 'postgresql' package or set PG_BINDIR."
    )


def _as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", SERVER_USER, "--", *cmd]
    return cmd


def _make_traversable_for_server_user(path: Path) -> None:
    """As root, let the `postgres` user reach `path`: add o+x (traverse, not list) where missing."""
    if os.geteuid() != 0:
        return
    for parent in reversed(path.resolve().parents):
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            print(f"note: granting traverse permission (o+x) on {parent} so the postgres user "
                  "can reach the project's cluster", flush=True)
            parent.chmod(mode | stat.S_IXOTH)


@dataclass
class Cluster:
    """A private cluster: `root` holds data/, run/ (socket, lock) and server.log."""

    root: Path
    port: int
    superuser: str
    password: str = field(repr=False)  # never in a traceback's or a log's repr
    # A libpq password file holding the superuser's password: then `dsn()` names the file
    # instead of carrying the password (a DSN may end up on a command line or in a log).
    passfile: Path | None = None

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "run"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    def dsn(self, dbname: str = "postgres") -> str:
        """The superuser's DSN for `dbname` (for the launcher and the tests' set-up only)."""
        if self.passfile is not None:
            return (f"host=127.0.0.1 port={self.port} user={self.superuser} dbname={dbname} "
                    f"passfile={self.passfile}")
        return (
            f"host=127.0.0.1 port={self.port} user={self.superuser} "
            f"password={self.password} dbname={dbname}"
        )

    def url(self, dbname: str, scheme: str = "postgresql") -> str:
        return f"{scheme}://{self.superuser}:{self.password}@127.0.0.1:{self.port}/{dbname}"

    # -- lifecycle ---------------------------------------------------------------------------

    def ensure_initialised(self) -> bool:
        """Create the cluster when it does not exist yet; return True when it was created."""
        if (self.data_dir / "PG_VERSION").exists():
            return False
        bindir = find_server_bindir()
        self.root.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        _make_traversable_for_server_user(self.root)
        pwfile = self.root / ".pwfile"
        self.root.chmod(0o700)
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # never readable
        with os.fdopen(fd, "w") as fh:                                    # by anyone else
            fh.write(self.password + "\n")
        try:
            if os.geteuid() == 0:
                shutil.chown(self.root, SERVER_USER)
                shutil.chown(self.socket_dir, SERVER_USER)
                shutil.chown(pwfile, SERVER_USER)
            self.root.chmod(0o700)
            subprocess.run(
                _as_server_user([
                    str(bindir / "initdb"), "-D", str(self.data_dir), "-U", self.superuser,
                    "--pwfile", str(pwfile), "-A", "scram-sha-256", "-E", "UTF8",
                    "--locale=C.UTF-8",
                ]),
                check=True, capture_output=True, text=True,
            )
        except subprocess.CalledProcessError as exc:
            raise ClusterError(f"initdb failed in {self.data_dir}:\n{exc.stderr}") from exc
        finally:
            pwfile.unlink(missing_ok=True)
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write(
                "\n# project-private cluster (include/launcher/pgcluster.py)\n"
                "listen_addresses = '127.0.0.1'\n"
                f"port = {self.port}\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                "max_connections = 200\n"
                "shared_buffers = 256MB\n"
                "fsync = on\n"
                "timezone = 'UTC'\n"
            )
        return True

    def is_running(self) -> bool:
        pid_file = self.data_dir / "postmaster.pid"
        if not pid_file.exists():
            return False
        try:
            pid = int(pid_file.read_text().splitlines()[0])
            os.kill(pid, 0)
        except (ValueError, IndexError, ProcessLookupError):
            return False
        except PermissionError:
            return True
        return True

    def start(self) -> None:
        if self.is_running():
            return
        bindir = find_server_bindir()
        _make_traversable_for_server_user(self.root)
        # Our ports lie in Linux's ephemeral range: a client connection that just closed may
        # hold the port in TIME_WAIT for up to 60 s. Wait that out instead of failing.
        deadline = time.monotonic() + 90
        while True:
            log_size = self.log_file.stat().st_size if self.log_file.exists() else 0
            result = subprocess.run(
                _as_server_user([
                    str(bindir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file),
                    "-o", f"-p {self.port}", "-w", "-t", "60", "start",
                ]),
                capture_output=True, text=True, check=False,
            )
            new_log = self.log_file.read_text()[log_size:] if self.log_file.exists() else ""
            if result.returncode == 0 or "Address already in use" not in new_log:
                break
            if time.monotonic() > deadline:
                break
            time.sleep(3)
        if result.returncode != 0:
            log_tail = self.log_file.read_text()[-2000:] if self.log_file.exists() else ""
            raise ClusterError(
                f"PostgreSQL did not start on 127.0.0.1:{self.port} "
                f"(is the port taken?):\n{result.stderr}\n{log_tail}"
            )

    def stop(self) -> None:
        if not self.is_running():
            return
        bindir = find_server_bindir()
        subprocess.run(
            _as_server_user([str(bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast",
                             "-w", "stop"]),
            check=False, capture_output=True,
        )

    # -- objects -----------------------------------------------------------------------------

    def ensure_database(self, name: str) -> None:
        """Create `name` if missing. Nobody but the superuser may connect to a new database
        until a grant says so (PUBLIC's CONNECT and TEMPORARY are revoked)."""
        import psycopg

        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            exists = conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(f'create database "{name}"')
                conn.execute(f'revoke connect, temporary on database "{name}" from public')

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')

    def wait_ready(self, timeout_s: float = 30) -> None:
        import psycopg

        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with psycopg.connect(self.dsn("postgres"), connect_timeout=3):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
