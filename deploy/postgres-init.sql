-- First start of the deployment's PostgreSQL: the warehouse next to Airflow's metadata.
-- (The simulated plant's own erp/eam databases are only for the embedded demo.)
create database warehouse;
