# Production image: Airflow 3.3 with the platform's runtime dependencies (requirements.txt only —
# tests and tools are in requirements/dev.txt and never here), the DAGs, the platform code and the
# dbt project with its manifest built in. One image for every component: compose
# (docker-compose.yml) and Kubernetes (deploy/helm-values.yaml) run the same one.
#
#   docker build -t smart-factory-platform/airflow:latest .
#
# The platform runs in a venv of its own, holding exactly requirements.txt: the base image's
# environment was installed with Airflow's constraint files, which we cannot use (they cannot be
# downloaded here, and our set differs: celery<5.7, dbt 1.12), and mixing the two sets with
# --no-deps would leave `pip check` judging packages we never chose. The base image still gives
# us the airflow user (50000, group 0), its entrypoint (dumb-init; `airflow <command>` unless the
# command is bash/python) and curl for the health checks.
FROM apache/airflow:slim-3.3.2-python3.11

USER root
ENV SFDP_VENV=/opt/sfdp/venv
COPY requirements.txt requirements/excludes.txt deploy/pip_check.py /opt/sfdp/build/
# dbt 1.12's trap (design/STACK.md): dbt-core requires dbt-core-experimental-parser, an sdist
# whose build downloads from GitHub; requirements.txt was resolved without it (excludes.txt) and
# is installed with --no-deps, and dbt imports it only with --use-v2-parser, which we never pass.
# pip_check.py runs `pip check` and allows exactly that one missing distribution.
RUN python3.11 -m venv "$SFDP_VENV" \
 && "$SFDP_VENV/bin/python" -m pip install --no-cache-dir --no-deps \
      -r /opt/sfdp/build/requirements.txt \
 && "$SFDP_VENV/bin/python" /opt/sfdp/build/pip_check.py --excludes /opt/sfdp/build/excludes.txt \
 && command -v curl >/dev/null
# Folders the components share through volumes (docker-compose.yml): the UI's passwords file
# (api-server, written by airflow-init), the plant's file drops, the B2MML outbound documents and
# the HTML reports. A new named volume starts as a copy of these: the airflow user's (group 0
# writable, for another AIRFLOW_UID in group 0), the passwords folder the airflow user's alone.
RUN mkdir -p /opt/airflow/auth /data/plant/inbox/wms /data/plant/inbox/scada \
      /data/plant/inbox/ems /data/plant/inbox/plm /data/outbound /data/reports \
 && chown -R airflow:0 /opt/airflow/auth /data \
 && chmod -R g=u /data && chmod 700 /opt/airflow/auth

ENV PATH="/opt/sfdp/venv/bin:${PATH}" \
    VIRTUAL_ENV=/opt/sfdp/venv \
    AIRFLOW_HOME=/opt/airflow \
    PYTHONPATH=/opt/airflow/include \
    DBT_PROJECT_DIR=/opt/airflow/dbt_project \
    DBT_SEND_ANONYMOUS_USAGE_STATS=false \
    DO_NOT_TRACK=1 \
    AIRFLOW__COSMOS__ENABLE_TELEMETRY=False
# The code (see .dockerignore: no tests, no var/, no .env). dbt_project stays writable by the
# airflow user: the publish DAG's reconciliation runs `dbt build`, which writes target/ and logs/
# inside the container (per container; the manifest Cosmos reads is the one parsed here).
COPY --chown=airflow:0 dags /opt/airflow/dags
COPY --chown=airflow:0 plugins /opt/airflow/plugins
COPY --chown=airflow:0 include /opt/airflow/include
COPY --chown=airflow:0 dbt_project /opt/airflow/dbt_project
USER airflow
# The dbt manifest Cosmos renders transform_dbt from (LoadMode.DBT_MANIFEST): parsed here, as
# `make run` parses it, so no container needs dbt at start-up. `dbt parse` needs no database.
RUN python -c "from factory_platform.dbt_project import parse_manifest; print(parse_manifest())"
