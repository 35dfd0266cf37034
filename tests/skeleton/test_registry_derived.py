"""The source registry is the single source of truth (issue #14 item 1): what other files say
about the plant systems agrees with `sources/<system>.py`, and the check that says so catches
a disagreement. Fix a failure with `PYTHONPATH=include python -m factory_platform.derived
write` (it writes a missing dbt source and the connection blocks; a column of an existing dbt
source is fixed by hand)."""

from __future__ import annotations

import shutil

import yaml
from factory_platform import derived
from factory_platform.sources import all_sources, get_source


def test_the_derived_files_agree_with_the_registry():
    assert derived.check() == []


def test_the_dbt_source_check_names_a_missing_a_mistyped_and_an_undeclared_column(
        project_root, tmp_path):
    source = get_source("mes")
    path = tmp_path / "_mes__sources.yml"
    shutil.copy(derived.sources_yml_path(source, project_root / "dbt_project"), path)
    assert derived.sources_yml_disagreements(source, path) == []
    document = yaml.safe_load(path.read_text())
    table = next(t for t in document["sources"][0]["tables"] if t["name"] == "confirmations")
    table["columns"] = [c for c in table["columns"] if c["name"] != "scrap_qty"]
    next(c for c in table["columns"] if c["name"] == "good_qty")["data_type"] = "integer"
    table["columns"].append({"name": "shift_leader", "data_type": "text"})
    table["columns"].append({"name": "_batch_id", "data_type": "text"})  # the loader's
    path.write_text(yaml.safe_dump(document, allow_unicode=True))
    where = f"{path}: mes.confirmations"
    assert derived.sources_yml_disagreements(source, path) == [
        f"{where}.good_qty: data_type 'integer', the registry declares 'bigint'",
        f"{where}: column 'scrap_qty' (bigint) missing",
        f"{where}: column 'shift_leader' is not a field in the registry",
    ]


def test_a_connection_block_edited_by_hand_is_reported(project_root, tmp_path):
    for name in ("docker-compose.yml", ".env.example", "deploy/helm-values.yaml"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(project_root / name, tmp_path / name)
    assert derived.check(tmp_path, project_root / "dbt_project") == []
    compose, helm = tmp_path / "docker-compose.yml", tmp_path / "deploy" / "helm-values.yaml"
    compose.write_text(compose.read_text().replace(
        "    AIRFLOW_CONN_QMS_API: ${AIRFLOW_CONN_QMS_API:?see .env.example}\n", ""))
    helm.write_text(helm.read_text().replace("/data/plant/inbox/wms", "/data/wms"))
    assert derived.check(tmp_path, project_root / "dbt_project") == [
        "docker-compose.yml: its plant connections are not the registry's",
        "helm-values.yaml: its plant connections are not the registry's"]
    assert derived.write(tmp_path, project_root / "dbt_project") == [compose, helm]
    assert derived.check(tmp_path, project_root / "dbt_project") == []


def test_the_embedded_default_connects_every_registry_system():
    """make run's environment: each system's connection, by its kind, from the registry."""
    from launcher.settings import plant_connections, test_instance

    instance = test_instance()
    connections = plant_connections(instance, {"MES_API_KEY": "key"},
                                    lambda db: f"postgres://loader@127.0.0.1/{db}")
    assert set(connections) == {f"AIRFLOW_CONN_{s.conn_id.upper()}"
                                for s in all_sources().values()}
    assert connections["AIRFLOW_CONN_ERP_DB"] == "postgres://loader@127.0.0.1/erp"
    assert connections["AIRFLOW_CONN_QMS_API"] == f"http://qms:key@127.0.0.1:{instance.qms_port}"
    assert yaml.safe_load(connections["AIRFLOW_CONN_WMS_DROPS"])["extra"]["path"] == str(
        instance.plant_dir / "inbox" / "wms")
