"""The Modbus edge collector: an edge gateway that polls the PLCs' registers at their cadence and
publishes every machine's reading to the MQTT unified namespace (`…/<machine>/plc`).

Neither the platform nor the plant: it imports neither `factory_platform` nor `plant_sim`
(import-linter contract `edge-collector-alone`). Its register map and its PLCs are its own
configuration (`gateway.toml`, `register_map.toml`), as a gateway in the field is configured.
Run it with `python -m edge_collector run` (`make run` starts it with the plant).
"""
