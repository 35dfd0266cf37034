"""A benchmark's private PostgreSQL, provisioned as `make run` provisions its own: a role per
job, the warehouse bootstrapped with the role matrix, fresh plant databases. The harness is the
superuser by its password file."""

from __future__ import annotations

import os

from launcher.__main__ import cluster_for
from launcher.pgcluster import Cluster
from launcher.settings import Instance, platform_environment, role_passwords

LIBPQ_VARIABLES = ("PGPASSWORD", "PGUSER", "PGPASSFILE", "PGDATABASE", "PGHOST", "PGPORT")


def use_platform_connections(instance: Instance, secret: dict[str, str]) -> dict[str, str]:
    """This process gets the components' connections (AIRFLOW_CONN_* …, as `make run`'s .env
    has them) but none of the libpq variables: the harness is the superuser by its password
    file, which a PGPASSWORD would override. Returns the whole environment (its PG* are the
    transformer's, for a dbt the benchmark starts)."""
    environment = platform_environment(instance, secret)
    os.environ.update({k: v for k, v in environment.items() if not k.startswith("PG")})
    for name in LIBPQ_VARIABLES:
        os.environ.pop(name, None)
    return environment


def start_provisioned_cluster(instance: Instance, secret: dict[str, str]) -> Cluster:
    """The cluster, started and provisioned; stopped again if that fails or is interrupted
    (the caller's clean-up only knows a cluster this returned)."""
    from factory_platform.provision import provision

    cluster = cluster_for(instance, secret)
    cluster.ensure_initialised()
    cluster.start()
    try:
        cluster.wait_ready()
        for name in ("warehouse", "erp", "eam"):
            cluster.drop_database(name)
        provision(cluster.dsn("postgres"), role_passwords(secret), plant=True)
    except BaseException:
        cluster.stop()
        raise
    return cluster
