"""Benchmarks run by ``make bench`` (``python -m benchmarks.run``); results go to ``BENCHMARKS.md``.

Every section measures our code against baselines from the same run on the same machine, so the
ratios mean something even on a shared 2-core box. Sections whose code has not landed report
"not available: <reason>" instead of failing the run.
"""
