"""The shop floor's own protocols, served from `<world>/shopfloor/shopfloor.sqlite` on the plant
clock: OPC UA (`opcua`), Modbus TCP (`modbus`) and MQTT (`mqtt`). See README "Shop floor"."""
