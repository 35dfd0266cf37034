"""Debian packages the embedded default needs (PostgreSQL, Redis, mosquitto), installed with apt
when missing and we may (root, or sudo)."""

from __future__ import annotations

import os
import shutil
import subprocess


def apt_install(package: str, why: str) -> bool:
    """Install `package` (a plain install first, `apt-get update` and again if that fails);
    False when we may not (neither root nor sudo). The caller checks for its binary after."""
    if os.geteuid() != 0 and not shutil.which("sudo"):
        return False
    prefix = [] if os.geteuid() == 0 else ["sudo"]
    print(f"{why}: installing Debian's {package} package …", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = [*prefix, "apt-get", "install", "-y", "-qq", package]
    if subprocess.run(install, check=False, env=env, stdout=subprocess.DEVNULL).returncode != 0:
        subprocess.run([*prefix, "apt-get", "update", "-qq"], check=False, env=env)
        subprocess.run(install, check=False, env=env, stdout=subprocess.DEVNULL)
    return True
