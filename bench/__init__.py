"""tykpulse's benchmark suite: stages, end to end against same-run baselines, curves.

Run it with `make bench` (quick), `make bench-full` (curves) or `python -m bench MODE`;
docs/benchmarks.md explains the figures.
"""
