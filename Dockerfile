# Production image: Airflow 3.3 with the pinned platform dependencies, the DAGs and the dbt project.
FROM apache/airflow:3.3.2-python3.11
COPY --chown=airflow:root requirements.txt requirements/excludes.txt /opt/platform/
RUN pip install --no-cache-dir --no-deps -r /opt/platform/requirements.txt
# The UI's passwords file lives here (volume airflow-auth, written by airflow-init): the folder
# and the file are the airflow user's alone.
RUN mkdir -p /opt/airflow/auth && chmod 700 /opt/airflow/auth
ENV PYTHONPATH=/opt/airflow/include \
    DBT_PROJECT_DIR=/opt/airflow/dbt_project \
    DBT_SEND_ANONYMOUS_USAGE_STATS=false \
    AIRFLOW__COSMOS__ENABLE_TELEMETRY=False
