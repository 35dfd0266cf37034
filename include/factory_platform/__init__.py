"""The Smart Factory Data Platform's shared code: sources, extraction, loads, gates, publishing.

DAG files in `dags/` stay thin and call into this package. It never imports the simulator.
"""
