"""Benchmarks, run with ``make bench`` (``python -m bench``). Each prints ratios against a
baseline measured in the same run; medians and p95 over repeated queries."""
