"""One Airflow pool per plant system, sized from the source registry: how hard we may hit it.

Every extraction task of `extract_<system>` runs in the pool `plant_<system>`
(dag_factory.build_extract_dag), whose slots are the source's `max_connections`
(sources.Source.pool_slots): scheduled runs, their catch-up slices, reloads and backfills of any
size share those slots, on every worker, so a plant system never sees more of our sessions at
once than it declared. A task holds one session (a SQL read) or one request at a time (a REST
client) and closes it before it reports done.

`python -m factory_platform.pools sync` creates or resizes the pools (idempotent; `make run`
and the deployment's init service call it after `airflow db migrate`). The registry is the
source of truth: a slot count changed in the UI is set back at the next sync, and a `plant_*`
pool whose system left the registry is removed. `python -m factory_platform.pools show` prints
them.
"""

from __future__ import annotations

import argparse

PREFIX = "plant_"


def declared_pools() -> dict[str, tuple[int, str]]:
    """Pool name → (slots, description), one per source of the registry."""
    from factory_platform.sources import all_sources

    return {
        source.pool: (source.pool_slots,
                      (f"{source.title.split(' — ')[0]}: extraction sessions at once "
                       f"({source.interface}, sources/{source.system}.py max_connections)"))
        for source in all_sources().values()
    }


def sync() -> dict[str, int]:
    """Create or resize every `plant_<system>` pool, drop those of systems no longer declared;
    return name → slots. Needs Airflow's metadata database (AIRFLOW__DATABASE__…)."""
    from airflow.models.pool import Pool
    from airflow.utils.session import create_session
    from sqlalchemy import select

    declared = declared_pools()
    with create_session() as session:
        for name, (slots, description) in declared.items():
            Pool.create_or_update_pool(name, slots, description, include_deferred=False,
                                       session=session)
        stale = session.scalars(select(Pool).where(Pool.pool.startswith(PREFIX))).all()
        for pool in stale:
            if pool.pool not in declared:
                session.delete(pool)
    return {name: slots for name, (slots, _) in declared.items()}


def current() -> dict[str, int]:
    """The `plant_*` pools Airflow has now: name → slots."""
    from airflow.models.pool import Pool
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return {p.pool: p.slots for p in
                session.scalars(select(Pool).where(Pool.pool.startswith(PREFIX)))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m factory_platform.pools",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("sync", "show"))
    args = parser.parse_args(argv)
    pools = sync() if args.command == "sync" else current()
    for name, slots in sorted(pools.items()):
        print(f"{name:16} {slots:3d} slots")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
