"""A benchmark's private PostgreSQL, provisioned as `make run` provisions its own: a role per
job, the warehouse bootstrapped with the role matrix, fresh plant databases. The harness is the
superuser by its password file."""

from __future__ import annotations

from launcher.pgcluster import Cluster
from launcher.settings import (
    SUPERUSER_PASSWORD,
    Instance,
    admin_passfile,
    role_passwords,
)


def start_provisioned_cluster(instance: Instance, secret: dict[str, str]) -> Cluster:
    from factory_platform.provision import provision

    cluster = Cluster(instance.pg_root, instance.pg_port, "postgres", secret[SUPERUSER_PASSWORD],
                      passfile=admin_passfile(instance, secret))
    cluster.ensure_initialised()
    cluster.start()
    cluster.wait_ready()
    for name in ("warehouse", "erp", "eam"):
        cluster.drop_database(name)
    provision(cluster.dsn("postgres"), role_passwords(secret), plant=True)
    return cluster
