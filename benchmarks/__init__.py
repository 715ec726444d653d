"""``python -m benchmarks``: every stage timed against its alternatives, in one run."""
