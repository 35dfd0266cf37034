"""The plant systems rendered during generation, after each day's MES records and truth rows
(systems/mes.py and systems/truth.py, which the world calls first: the random draws' order)."""

from __future__ import annotations

from typing import Any


def all_systems() -> list[Any]:
    """Instances of every system writer, in a fixed order (ERP first: others post to it)."""
    from plant_sim.systems.eam import EamSystem
    from plant_sim.systems.erp import ErpSystem
    from plant_sim.systems.plm import PlmSystem
    from plant_sim.systems.qms import QmsSystem
    from plant_sim.systems.scada import ScadaEmsSystem
    from plant_sim.systems.shopfloor import ShopfloorSystem
    from plant_sim.systems.wms import WmsSystem

    return [
        ErpSystem(),
        EamSystem(),
        WmsSystem(),
        ScadaEmsSystem(),
        QmsSystem(),
        PlmSystem(),
        ShopfloorSystem(),
    ]
