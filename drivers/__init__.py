"""Hardware drivers: one module per concern, plus the simulated plant in ``drivers.sim``."""
