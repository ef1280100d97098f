"""Benchmarks that print figures and ratios (``python -m verify bench constructions|training``)
and the report comparer every speed change is judged by (``python -m verify.bench.compare``)."""
