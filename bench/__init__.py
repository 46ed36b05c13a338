"""Benchmarks with their targets (issue 8): `gridwatch bench` or `python -m bench`."""
