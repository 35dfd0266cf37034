"""`run_dbt` (the gate's, the freshness check's and the reconciliation's dbt commands) never
writes into the project's target/: transform_dbt's every parse reads target/manifest.json, and a
manifest half-written by another command there failed a task's DAG load — in the latency bench
a transform run then waited a minute for the task's reschedule."""

from __future__ import annotations

import json


def test_a_command_without_a_target_path_leaves_the_projects_manifest_alone():
    from factory_platform.dbt_project import (
        MANIFEST_PATH,
        ensure_fresh_manifest,
        run_dbt,
    )

    ensure_fresh_manifest()
    before = MANIFEST_PATH.stat()
    # `dbt ls` writes manifest.json and needs no connection: any DSN does
    done = run_dbt("host=127.0.0.1 port=1 user=nobody dbname=nothing", "ls", "--select",
                   "stg_erp__inbound_postings", "--resource-type", "model", "--output", "name",
                   "--quiet")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split() == ["stg_erp__inbound_postings"]
    after = MANIFEST_PATH.stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (
        before.st_ino, before.st_mtime_ns, before.st_size)
    assert json.loads(MANIFEST_PATH.read_text())["metadata"]["dbt_version"]
