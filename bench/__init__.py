"""Benchmarks for skiplock. Run them from the repository root, e.g. `python bench/drain.py`."""
