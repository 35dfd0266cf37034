"""One module per simulated plant system; each renders the world's events to its interface."""
