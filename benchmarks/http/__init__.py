"""HTTP benchmark scenarios (2: adapters vs base, 3: churn, 4: generation) driving ``stitch bench``."""
