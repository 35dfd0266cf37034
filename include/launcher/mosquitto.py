"""A project-private MQTT broker (Debian's `mosquitto`) for the plant's machine events (#16).

Like the private PostgreSQL and Redis: its folder `var/<instance>/mosquitto/` (mode 0700) holds
`mosquitto.conf` (0600), the password file written by `mosquitto_passwd` (0600; the password
reaches it on standard input, never a command line), the persistence database, pid and log.
It listens on 127.0.0.1 and its own port only, anonymous clients are refused, and persistence is
on: a restart (`restart()`, or `stop()` + `start()`) keeps the sessions of clients that
connected with a persistent session (clean session off) and the QoS 1 messages queued for them
— on a clean stop (SIGTERM) mosquitto writes its database, and it autosaves every few seconds.
As root the broker drops to the `mosquitto` system user (the folder is handed to it).

Accounts: `user` and any `more_users`, each with its password (on standard input too). With an
`acl` (mosquitto's `user` / `topic read|write|readwrite` lines), each account may do only what
its lines say — `make run` gives the plant, the edge collector and the platform's ingest an
account each: the ingest may only read, the publishers only write their own topics
(launcher.broker_for). Without one, every account may do everything (a test's one-user broker).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from launcher.debian import apt_install


class MosquittoError(RuntimeError):
    """The private broker could not be installed or started."""


def find_binaries() -> tuple[str, str]:
    """`mosquitto` and `mosquitto_passwd`, installing Debian's package with apt when missing and
    we may (root or sudo), as pgcluster does for PostgreSQL."""
    for attempt in range(2):
        broker = shutil.which("mosquitto") or (
            "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
        passwd = shutil.which("mosquitto_passwd")
        if broker and passwd:
            return broker, passwd
        if attempt == 0:
            apt_install("mosquitto", "mosquitto missing")
    raise MosquittoError("mosquitto not found and apt could not install it; install Debian's "
                         "'mosquitto' package (the plant's MQTT broker)")


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read: created 0600 and renamed into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


@dataclass
class Mosquitto:
    """A private broker in `root` on 127.0.0.1:`port`; clients log in as `user`/`password`."""

    root: Path
    port: int
    user: str
    password: str = field(repr=False)  # never in a traceback's or a log's repr
    host: str = "127.0.0.1"
    more_users: dict[str, str] = field(default_factory=dict, repr=False)  # name → password
    acl: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()

    @property
    def config_file(self) -> Path:
        return self.root / "mosquitto.conf"

    @property
    def password_file(self) -> Path:
        return self.root / "passwd"

    @property
    def acl_file(self) -> Path:
        return self.root / "acl"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def pid_file(self) -> Path:
        return self.root / "mosquitto.pid"

    @property
    def log_file(self) -> Path:
        return self.root / "mosquitto.log"

    def write_config(self) -> None:
        """Folder (0700), password file and configuration (0600), rewritten on every start."""
        _broker, passwd = find_binaries()
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
        self.data_dir.mkdir(exist_ok=True)
        self.data_dir.chmod(0o700)
        self.password_file.unlink(missing_ok=True)
        accounts = {self.user: self.password, **self.more_users}
        for index, (name, password) in enumerate(accounts.items()):
            # the password on standard input (twice: it asks to confirm), never in argv;
            # -c creates the file with the first account
            create = ["-c"] if index == 0 else []
            done = subprocess.run([passwd, *create, str(self.password_file), name],
                                  input=f"{password}\n{password}\n", text=True,
                                  capture_output=True, check=False, umask=0o077)
            if done.returncode != 0:
                raise MosquittoError(f"mosquitto_passwd failed for {name}: {done.stderr[-500:]}")
        self.password_file.chmod(0o600)
        if self.acl:
            _write_private(self.acl_file, "\n".join([*self.acl, ""]))
        else:
            self.acl_file.unlink(missing_ok=True)
        _write_private(self.config_file, "\n".join([
            "# project-private MQTT broker of the simulated plant (include/launcher/mosquitto.py)",
            "per_listener_settings false",
            f"listener {self.port} {self.host}",
            "allow_anonymous false",
            f"password_file {self.password_file}",
            *([f"acl_file {self.acl_file}"] if self.acl else []),
            # sessions and queued QoS 1 messages survive a restart
            "persistence true",
            f"persistence_location {self.data_dir}/",
            "autosave_interval 2",
            "persistent_client_expiration 14d",
            # A persistent session's queue while its subscriber is away (a consumer restart, an
            # ingest that falls behind): mosquitto's default, 1000 messages, silently drops
            # the rest — at 240 msg/s five seconds. 0: no limit (bounded by memory and disk):
            # what the broker accepted reaches the platform (factory_platform.extract.mqtt).
            "max_queued_messages 0",
            "max_queued_bytes 0",
            # QoS 1 messages in flight to an MQTT 3.1.1 client; an MQTT 5 client (the ingest)
            # sets its own receive maximum
            "max_inflight_messages 100",
            f"pid_file {self.pid_file}",
            f"log_dest file {self.log_file}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "connection_messages false",
            "",
        ]))
        if os.geteuid() == 0:  # mosquitto drops to its system user, who must read and write here
            import pwd

            try:
                pw = pwd.getpwnam("mosquitto")
            except KeyError:
                return
            for parent in self.root.parents:
                if not parent.stat().st_mode & 0o001:
                    raise MosquittoError(
                        f"{self.root}: the mosquitto user cannot reach it ({parent} is not "
                        "searchable by others); put the broker's folder elsewhere")
            self.config_file.write_text(self.config_file.read_text() + "user mosquitto\n")
            acl = [self.acl_file] if self.acl else []
            for p in (self.root, self.data_dir, self.password_file, self.config_file, *acl,
                      *self.data_dir.iterdir()):
                os.chown(p, pw.pw_uid, pw.pw_gid)
            if self.log_file.exists():
                os.chown(self.log_file, pw.pw_uid, pw.pw_gid)

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
        try:  # a recycled pid is not our broker
            if str(self.config_file).encode() not in Path(f"/proc/{pid}/cmdline").read_bytes():
                return None
        except OSError:
            return None
        return pid

    def is_running(self) -> bool:
        return self.pid() is not None

    def start(self, timeout_s: float = 20) -> None:
        """Start unless running, then wait until the port accepts connections. The
        configuration and password file are rewritten each time; a running broker reloads them
        (SIGHUP: a new password takes effect at once, a new port needs `restart()`)."""
        pid = self.pid()
        if pid is not None:
            self.write_config()
            os.kill(pid, signal.SIGHUP)
            self.wait_ready(timeout_s)
            return
        broker, _passwd = find_binaries()
        self.write_config()
        self.pid_file.unlink(missing_ok=True)
        done = subprocess.run([broker, "-c", str(self.config_file), "-d"], cwd=self.root,
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise MosquittoError(f"mosquitto did not start on {self.host}:{self.port}: "
                                 f"{(done.stderr or done.stdout)[-1000:]}")
        self.wait_ready(timeout_s)

    def wait_ready(self, timeout_s: float = 20) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if self.is_running():
                try:
                    with socket.create_connection((self.host, self.port), timeout=1):
                        return
                except OSError:
                    pass
            if time.monotonic() > deadline:
                tail = self.log_file.read_text()[-1500:] if self.log_file.exists() else ""
                raise MosquittoError(f"mosquitto on {self.host}:{self.port} did not come up "
                                     f"within {timeout_s:.0f} s (is the port taken?)\n{tail}")
            time.sleep(0.05)

    def stop(self, timeout_s: float = 20) -> None:
        """SIGTERM (mosquitto writes its persistence database and exits), SIGKILL after
        `timeout_s`."""
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
            time.sleep(0.05)

    def restart(self) -> None:
        """Stop cleanly and start again (sessions and queued messages kept)."""
        self.stop()
        self.start()
