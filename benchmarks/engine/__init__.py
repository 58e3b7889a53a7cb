"""Engine benchmarks of the engine issue: `python -m benchmarks.engine.run`."""
