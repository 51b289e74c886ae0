"""Benchmarks and the paper-reproduction harness (`python -m benchmarks.reproduce`)."""
