"""`pip check` for the image's dependency set, with the one exclusion we resolve without.

    python deploy/pip_check.py                      # this interpreter's environment (the build)
    python deploy/pip_check.py --fresh-venv DIR     # a throwaway venv with requirements.txt only

requirements.txt is installed with `--no-deps` (Airflow's constraint files cannot be
downloaded, the set is resolved by `make requirements`), so `pip check` is what proves the set
consistent. It passes when pip reports nothing, or only that a distribution named in
requirements/excludes.txt is not installed: `dbt-core-experimental-parser` (dbt-core 1.12
requires it, but it is an sdist whose build downloads a wheel from GitHub, and dbt imports it
only with `--use-v2-parser`, which we never pass). Anything else — a missing dependency, a
version conflict — fails. Standard library only: the Dockerfile runs it before any code is in
the image.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MISSING = re.compile(r"^(?P<who>\S+ \S+) requires (?P<what>[A-Za-z0-9_.\-]+), which is not installed\.$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def excluded(path: Path) -> set[str]:
    return {canonical(line.strip()) for line in path.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")}


def unexpected(report: str, allowed: set[str]) -> list[str]:
    """The lines of `pip check`'s report that are not an allowed missing distribution."""
    problems = []
    for line in report.splitlines():
        line = line.strip()
        if not line or line.startswith("No broken requirements"):
            continue
        match = MISSING.match(line)
        if match and canonical(match["what"]) in allowed:
            continue
        problems.append(line)
    return problems


def check(python: str, excludes: Path) -> int:
    result = subprocess.run([python, "-m", "pip", "check"], capture_output=True, text=True,
                            check=False)
    problems = unexpected(result.stdout + result.stderr, excluded(excludes))
    if problems:
        print("pip check failed:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print(f"pip check: consistent (allowed missing: {', '.join(sorted(excluded(excludes)))})")
    return 0


def fresh_venv(target: Path, requirements: Path) -> str:
    """A new venv (with pip) holding exactly `requirements`, installed without dependencies."""
    shutil.rmtree(target, ignore_errors=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(target)
    python = str(target / "bin" / "python")
    uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    if Path(uv).exists():  # a second, cached: the developer's venv has uv (requirements/bootstrap.txt)
        cmd = [uv, "pip", "install", "-q", "--python", python, "--no-deps", "-r", str(requirements)]
    else:
        cmd = [python, "-m", "pip", "install", "-q", "--no-deps", "-r", str(requirements)]
    subprocess.run(cmd, check=True)
    return python


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fresh-venv", type=Path, metavar="DIR",
                        help="create DIR with requirements.txt alone (--no-deps) and check it")
    parser.add_argument("--requirements", type=Path, default=ROOT / "requirements.txt")
    parser.add_argument("--excludes", type=Path, default=ROOT / "requirements" / "excludes.txt")
    args = parser.parse_args(argv)
    python = sys.executable
    if args.fresh_venv:
        python = fresh_venv(args.fresh_venv, args.requirements)
    return check(python, args.excludes)


if __name__ == "__main__":
    raise SystemExit(main())
