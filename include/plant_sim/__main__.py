"""`python -m plant_sim` entry point."""

from plant_sim.cli import main

raise SystemExit(main())
