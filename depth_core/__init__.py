"""Pure core shared by collectors, pipeline and analysts: names, raw layout, schemas, book replay, merge.

Nothing in this package imports Dagster or does network I/O, so it is cheap to test and reuse.
"""
