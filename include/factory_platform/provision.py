"""Provisioning: everything the superuser does, and all it does — the jobs' roles, the
databases and who may connect to them, the warehouse's schemas, ops and raw tables with the role
matrix of `factory_platform.roles` applied. `make run` (include/launcher), the test session's
set-up (tests/conftest.py) and the deployment's init container (`python -m
factory_platform.provision`) all run this same code.

Its own module because it sits above both the role matrix and the warehouse bootstrap (which
applies that matrix): kept in roles.py it made roles -> bootstrap -> warehouse -> roles a cycle.
"""

from __future__ import annotations

import os

from factory_platform import roles
from factory_platform.bootstrap import bootstrap_warehouse
from factory_platform.warehouse import env_dsn


def provision(admin_dsn: str, passwords: dict[str, str], *, plant: bool,
              warehouse_db: str = roles.WAREHOUSE_DB) -> None:
    """Everything the superuser does, and all it does: the roles (passwords from `passwords`,
    keyed by role), the databases and who may connect to them, the warehouse's schemas, ops
    tables and raw tables (bootstrap) with the role matrix applied, and — with `plant` (the
    embedded default's simulated plant) — the plant's roles and databases. Idempotent; an
    installation from before the roles is adopted (its objects handed to their roles)."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    def dsn(dbname: str) -> str:
        return make_conninfo(admin_dsn, dbname=dbname)

    logins = roles.PLATFORM_LOGINS + (roles.PLANT_LOGINS if plant else ())
    with psycopg.connect(dsn("postgres"), autocommit=True) as conn:
        if not roles.is_superuser(conn):
            raise RuntimeError("provisioning needs a superuser connection")
        conn.execute("select pg_advisory_lock(20261203)")
        try:
            for role in logins:
                roles.ensure_role(conn, role, passwords[role])
            roles.ensure_role(conn, roles.READER, None)
            conn.execute(f"grant {roles.READER} to {roles.REPORTER}")
            databases = dict(roles.PLATFORM_DATABASES)
            databases[warehouse_db] = databases.pop(roles.WAREHOUSE_DB)
            if plant:
                databases.update(roles.PLANT_DATABASES)
            for name, (owner, grants) in databases.items():
                roles.ensure_database(conn, name, owner)
                roles.grant_database(conn, name, grants)
            roles.configure_database(conn, warehouse_db, roles.WAREHOUSE_SETTINGS)
            if plant:
                roles.grant_database(conn, warehouse_db, roles.PLANT_WAREHOUSE_PRIVILEGES)
            for name in ("postgres", "template1"):
                conn.execute(f'revoke connect, temporary on database "{name}" from public')
        finally:
            conn.execute("select pg_advisory_unlock(20261203)")
    roles.adopt_database(dsn(roles.AIRFLOW_DB), roles.AIRFLOW)
    if plant:
        roles.adopt_database(dsn(roles.ERP_DB), roles.PLANT_ERP)
        roles.adopt_database(dsn(roles.EAM_DB), roles.PLANT_EAM)
        for system in ("erp", "eam"):
            roles.apply_plant_privileges(dsn(system), system)
    bootstrap_warehouse(dsn(warehouse_db))  # schemas, ops and raw tables, as the superuser
    with psycopg.connect(dsn(warehouse_db), autocommit=True) as conn:
        roles.apply_warehouse_privileges(conn)


def passwords_from_environment(plant: bool = False) -> dict[str, str]:
    logins = roles.PLATFORM_LOGINS + (roles.PLANT_LOGINS if plant else ())
    missing = [roles.PASSWORD_ENV[r] for r in logins if not os.environ.get(roles.PASSWORD_ENV[r])]
    if missing:
        raise SystemExit(f"set {', '.join(missing)} (no default passwords)")
    return {role: os.environ[roles.PASSWORD_ENV[role]] for role in logins}


def main(argv: list[str] | None = None) -> int:
    """`python -m factory_platform.provision [--plant]`: the deployment's init step.
    The superuser comes from the libpq environment (PGHOST, PGPORT, PGUSER, PGPASSWORD), the
    roles' passwords from SFDP_*_PASSWORD; nothing secret on the command line."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m factory_platform.provision",
        description="roles, databases, grants, warehouse bootstrap (as the superuser)")
    parser.add_argument("--plant", action="store_true",
                        help="also the simulated plant's roles and databases (erp, eam)")
    parser.add_argument("--warehouse-db", default=roles.WAREHOUSE_DB)
    args = parser.parse_args(argv)
    # provision() names each database it connects to, so the environment's own one is no matter
    provision(env_dsn(), passwords_from_environment(args.plant), plant=args.plant,
              warehouse_db=args.warehouse_db)
    provisioned = roles.ALL_ROLES if args.plant else roles.PLATFORM_LOGINS
    print(f"provisioned roles {', '.join(provisioned)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
