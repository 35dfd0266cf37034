"""Where the dbt project lives, how Cosmos runs it, and the developer's loop around it.

Cosmos renders the dbt DAG from `target/manifest.json` (LoadMode.DBT_MANIFEST), so parsing a
DAG file never runs dbt for an unchanged project. `parse_manifest` (called by `make run`, the
tests and the image build) writes it; `ensure_fresh_manifest` (called each time the
transform DAG file is parsed) re-parses it when a file of the project changed since — a new or
edited model shows up in Airflow at the dag-processor's next pass, without a restart. The check
costs a `stat` per project file when nothing changed; a re-parse runs once, under a file lock,
whichever process (dag-processor, task) notices first, and the new manifest replaces the old
in one rename, so no reader sees half a file.

`python -m factory_platform.dbt_project ci` is the slim CI (`make dbt-ci`): build what changed
against the production manifest, and everything downstream, into the developer's schemas.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DBT_PROJECT_DIR = Path(os.environ.get("DBT_PROJECT_DIR", PROJECT_ROOT / "dbt_project"))
MANIFEST_PATH = DBT_PROJECT_DIR / "target" / "manifest.json"
# dbt's own target path for the manifest parses (its partial-parse state lives there)
PARSE_TARGET_DIR = DBT_PROJECT_DIR / "target" / "parse"
# what the manifest was parsed from: stat and content fingerprints of the project's files
INPUTS_RECORD = DBT_PROJECT_DIR / "target" / "manifest.inputs.json"
PARSE_LOCK = DBT_PROJECT_DIR / "target" / ".manifest.lock"
# the files dbt parses: project configuration and these folders (not target/, logs/, lint)
PROJECT_FILES = ("dbt_project.yml", "profiles.yml", "selectors.yml", "packages.yml",
                 "dependencies.yml")
PROJECT_FOLDERS = ("models", "macros", "seeds", "snapshots", "tests", "analyses")
PRODUCTION_TARGET = "warehouse"  # profiles.yml; builds the production schemas
DEV_TARGET = "dev"  # builds into dev_<user>_* (macros/generate_schema_name.sql)
PARSE_TIMEOUT_SECONDS = 300


def dbt_executable() -> Path:
    return Path(sys.executable).parent / "dbt"


def dbt_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a dbt command: artifacts written (Cosmos' tasks set DBT_WRITE_JSON
    false in their process), no usage statistics sent."""
    return dict(env or os.environ, DBT_WRITE_JSON="true", DBT_SEND_ANONYMOUS_USAGE_STATS="false")


# --------------------------------------------------------------------------- manifest


def project_files(project_dir: Path | None = None) -> list[Path]:
    """Every file dbt reads to parse the project, in a stable order."""
    project_dir = project_dir or DBT_PROJECT_DIR
    files = [project_dir / name for name in PROJECT_FILES if (project_dir / name).is_file()]
    for folder in PROJECT_FOLDERS:
        for root, dirs, names in os.walk(project_dir / folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            files += [Path(root) / n for n in sorted(names) if not n.startswith(".")]
    return files


def stat_fingerprint(files: list[Path]) -> str:
    """Names, sizes and modification times: cheap, changes with any edit (or a touch)."""
    digest = hashlib.sha256()
    for path in files:
        try:
            st = path.stat()
        except FileNotFoundError:  # deleted since the walk: the next check sees it
            continue
        digest.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def content_fingerprint(files: list[Path], project_dir: Path | None = None) -> str:
    """Relative names and contents: the same for the same project wherever it was copied."""
    project_dir = project_dir or DBT_PROJECT_DIR
    digest = hashlib.sha256()
    for path in files:
        try:
            content = path.read_bytes()
        except FileNotFoundError:
            continue
        digest.update(f"{path.relative_to(project_dir)}\0".encode())
        digest.update(hashlib.sha256(content).digest())
    return digest.hexdigest()


def _read_record() -> dict:
    try:
        return json.loads(INPUTS_RECORD.read_text())
    except (OSError, ValueError):
        return {}


def _write_record(record: dict) -> None:
    temporary = INPUTS_RECORD.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(record))
    os.replace(temporary, INPUTS_RECORD)


@contextmanager
def _parse_lock():
    """One parse at a time across processes (dag-processor, task runners, make run)."""
    import fcntl

    PARSE_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(PARSE_LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _dbt_parse(env: dict[str, str] | None) -> None:
    """`dbt parse` (production target) into PARSE_TARGET_DIR, then its manifest in place of
    MANIFEST_PATH in one rename; raise with dbt's output if it fails."""
    result = subprocess.run(
        [str(dbt_executable()), "parse", "--project-dir", str(DBT_PROJECT_DIR),
         "--profiles-dir", str(DBT_PROJECT_DIR), "--target", PRODUCTION_TARGET,
         "--target-path", str(PARSE_TARGET_DIR), "--quiet"],
        env=dbt_environment(env), capture_output=True, text=True, check=False,
        timeout=PARSE_TIMEOUT_SECONDS,
    )
    if result.returncode != 0:
        raise RuntimeError(f"dbt parse failed:\n{result.stdout}\n{result.stderr}")
    # the manifest, and dbt's partial-parse state beside it (Cosmos' tasks start from it)
    for name in ("manifest.json", "partial_parse.msgpack"):
        _copy_atomically(PARSE_TARGET_DIR / name, MANIFEST_PATH.parent / name)


def _parse_and_record(env: dict[str, str] | None) -> None:
    """Parse (the lock held) and record what was parsed; a failure is recorded too, so an
    unchanged broken project is not parsed again at every DAG-file pass."""
    files = project_files()
    record = {"stat": stat_fingerprint(files), "content": content_fingerprint(files)}
    try:
        _dbt_parse(env)
    except (RuntimeError, subprocess.TimeoutExpired) as error:
        previous = _read_record()
        _write_record({**previous, "failed": record["content"], "error": str(error)})
        raise RuntimeError(str(error)) from error
    _write_record(record)


def parse_manifest(env: dict[str, str] | None = None) -> Path:
    """Run `dbt parse` to write target/manifest.json; raise with dbt's output if it fails."""
    with _parse_lock():
        _parse_and_record(env)
    return MANIFEST_PATH


def manifest_is_fresh(record: dict, files: list[Path]) -> bool:
    return MANIFEST_PATH.is_file() and record.get("stat") == stat_fingerprint(files)


def ensure_fresh_manifest(env: dict[str, str] | None = None) -> bool:
    """Re-parse the manifest if a project file changed since it was parsed (content, not a
    mere touch); True if it did. A project that fails to parse raises dbt's error — the DAG
    shows as broken with it — until its files change again."""
    if manifest_is_fresh(_read_record(), project_files()):
        return False
    with _parse_lock():
        record, files = _read_record(), project_files()  # someone may have parsed meanwhile
        if manifest_is_fresh(record, files):
            return False
        content = content_fingerprint(files)
        if MANIFEST_PATH.is_file() and record.get("content") == content:
            _write_record({"stat": stat_fingerprint(files), "content": content})
            return False
        if record.get("failed") == content:
            raise RuntimeError(record.get("error", "dbt parse failed"))
        _parse_and_record(env)
        return True


# --------------------------------------------------------------------------- commands


def dsn_environment(dsn: str) -> dict[str, str]:
    """PG* variables for dbt's profile (dbt_project/profiles.yml) from a libpq DSN."""
    from psycopg.conninfo import conninfo_to_dict

    parts = conninfo_to_dict(dsn)
    names = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "password": "PGPASSWORD",
             "dbname": "PGDATABASE"}
    return {env: str(parts[key]) for key, env in names.items() if parts.get(key) is not None}


def run_dbt(dsn: str, *args: str, target_path: str | None = None) -> subprocess.CompletedProcess:
    """`dbt <args>` on the project against the warehouse `dsn` (outside Cosmos' per-model
    tasks: the gate's test run, source freshness, the post-publishing reconciliation). Returns
    dbt's result; the caller decides what a non-zero return code means.

    dbt writes its artifacts into `target_path` (a folder the caller reads run_results.json
    from), else into a temporary folder removed afterwards — never into the project's target/,
    whose manifest.json every parse of transform_dbt reads: a command writing it there (the
    reconciliation did) made a task starting at that moment fail to load the DAG and wait a
    minute for its reschedule. The folder starts from the partial-parse state this
    warehouse's commands left last (`_partial_parse_state`), and leaves its own there: dbt
    re-parses only the files that changed instead of the whole project (~9 s on 2 cores)."""
    if target_path is None:
        with tempfile.TemporaryDirectory(prefix="dbt-") as temporary:
            return run_dbt(dsn, *args, target_path=temporary)
    environment = dsn_environment(dsn)
    state = _partial_parse_state(environment)
    # else the start-up parse's (same project, production target)
    seed = state if state.is_file() else MANIFEST_PATH.parent / "partial_parse.msgpack"
    _copy_atomically(seed, Path(target_path) / "partial_parse.msgpack")
    done = subprocess.run(
        [str(dbt_executable()), *args, "--project-dir", str(DBT_PROJECT_DIR),
         "--profiles-dir", str(DBT_PROJECT_DIR), "--target-path", target_path,
         # no debug log file (every query's SQL, ~15 % of dbt's CPU time): dbt's messages are
         # in its output
         "--log-path", target_path, "--log-level-file", "none"],
        # callers read the artifacts (run_results.json, manifest.json): write them even when
        # the surrounding process runs Cosmos' model tasks with DBT_WRITE_JSON=false
        env=dict(os.environ, **environment, DBT_SEND_ANONYMOUS_USAGE_STATS="false",
                 DBT_WRITE_JSON="true"),
        capture_output=True, text=True, check=False,
    )
    _copy_atomically(Path(target_path) / "partial_parse.msgpack", state)
    return done


def _partial_parse_state(environment: dict[str, str]) -> Path:
    """Where run_dbt keeps dbt's partial-parse state for one warehouse connection: dbt starts
    over when the profile's connection (host, port, user, database) differs from the state's."""
    key = "\0".join(f"{k}={v}" for k, v in sorted(environment.items()) if k != "PGPASSWORD")
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return MANIFEST_PATH.parent / "partial-parse" / f"partial_parse-{digest}.msgpack"


def _copy_atomically(source: Path, destination: Path) -> None:
    """`source` to `destination` through a temporary file and a rename (readers see the old or
    the new file, never half of one); nothing when there is no `source`."""
    if not source.is_file():
        return
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.with_name(f".{destination.name}.{os.getpid()}.tmp")
    temporary.write_bytes(source.read_bytes())
    os.replace(temporary, destination)


# --------------------------------------------------------------------------- slim CI


def production_state_from_git(revision: str, workdir: Path) -> Path:
    """The production manifest of the project as committed at `revision` (e.g. HEAD, main):
    its dbt_project/ exported with `git archive` and parsed with the production target.
    Returns the folder holding manifest.json (dbt's --state)."""
    import io
    import shutil
    import tarfile

    export = workdir / "base"
    shutil.rmtree(export, ignore_errors=True)
    export.mkdir(parents=True)
    relative = DBT_PROJECT_DIR.relative_to(PROJECT_ROOT)
    archive = subprocess.run(["git", "-C", str(PROJECT_ROOT), "archive", revision, str(relative)],
                             capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(export, filter="data")
    project = export / relative
    state = project / "target"
    result = subprocess.run(
        [str(dbt_executable()), "parse", "--project-dir", str(project), "--profiles-dir",
         str(project), "--target", PRODUCTION_TARGET, "--target-path", str(state), "--quiet"],
        env=dbt_environment(), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"dbt parse of {revision} failed:\n{result.stdout}\n{result.stderr}")
    return state


def modified_nodes(state: Path, *, project_dir: Path | None = None,
                   target_path: Path | None = None) -> list[str]:
    """What changed against the production manifest in `state`, and everything downstream
    (selector slim_ci: state:modified+): models, seeds, snapshots and tests, by name. Compared
    as production builds them (production target), so only a change of the project's files
    counts, not the dev target's schema names."""
    project_dir = project_dir or DBT_PROJECT_DIR
    target_path = target_path or project_dir / "target" / "ci"
    result = subprocess.run(
        [str(dbt_executable()), "ls", "--project-dir", str(project_dir), "--profiles-dir",
         str(project_dir), "--target", PRODUCTION_TARGET, "--target-path", str(target_path),
         "--selector", "slim_ci", "--state", str(state), "--quiet", "--output", "name",
         *[arg for kind in ("model", "seed", "snapshot", "test")
           for arg in ("--resource-type", kind)]],
        env=dbt_environment(), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"dbt ls failed:\n{result.stdout}\n{result.stderr}")
    return sorted({line.strip() for line in result.stdout.splitlines() if line.strip()})


def slim_ci_command(state: Path, nodes: list[str], *, project_dir: Path | None = None,
                    target_path: Path | None = None) -> list[str]:
    """`dbt build` of `nodes` with the dev target (the developer's dev_* schemas); the models
    it does not build are read from production (--defer to `state`), never written."""
    project_dir = project_dir or DBT_PROJECT_DIR
    target_path = target_path or project_dir / "target" / "ci"
    return [str(dbt_executable()), "build", "--project-dir", str(project_dir),
            "--profiles-dir", str(project_dir), "--target", DEV_TARGET,
            "--target-path", str(target_path), "--select", *nodes,
            "--state", str(state), "--defer"]


def main(argv: list[str] | None = None) -> int:
    """`python -m factory_platform.dbt_project ci [--state DIR | --base REV] [--list]` and
    `… parse` (re-parse the manifest Airflow renders transform_dbt from, if stale)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m factory_platform.dbt_project")
    sub = parser.add_subparsers(dest="command", required=True)
    ci = sub.add_parser("ci", help="slim CI: build state:modified+ into the dev schemas")
    ci.add_argument("--state", type=Path,
                    help="folder of the production manifest.json (e.g. the deployed image's "
                         "dbt_project/target); default: parsed from git --base")
    ci.add_argument("--base", default="HEAD",
                    help="git revision whose dbt_project/ is production (default HEAD: the "
                         "uncommitted changes are what CI builds)")
    ci.add_argument("--list", action="store_true", help="list the models it would build")
    sub.add_parser("parse", help="re-parse target/manifest.json if the project changed")
    args = parser.parse_args(argv)
    if args.command == "parse":
        print("re-parsed" if ensure_fresh_manifest() else "up to date", MANIFEST_PATH)
        return 0
    state = args.state or production_state_from_git(args.base,
                                                    DBT_PROJECT_DIR / "target" / "ci-state")
    nodes = modified_nodes(state)
    print(f"slim CI against {state / 'manifest.json'}: {len(nodes)} changed or downstream "
          f"nodes", flush=True)
    if args.list or not nodes:
        print("\n".join(nodes))
        return 0
    return subprocess.run(slim_ci_command(state, nodes), env=dbt_environment(),
                          check=False).returncode


if __name__ == "__main__":
    raise SystemExit(main())
