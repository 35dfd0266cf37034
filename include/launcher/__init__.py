"""Local launcher: the embedded default that `make run` and `make test` start.

It is the only code besides the tests that knows both the platform and the simulated plant:
it starts a project-private PostgreSQL cluster, writes `.env`, starts the simulator and Airflow,
and stops exactly what it started. Nothing in the platform imports it.
"""
