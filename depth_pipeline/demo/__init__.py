"""``make demo`` (``python -m depth_pipeline.demo``): the whole system end to end, offline, on the embedded
defaults.

It starts the local exchange simulator (two symbols), two collectors (``eu-1``, ``ap-1``) writing to a
local folder store, cuts ``eu-1``'s network for a while (a TCP proxy between it and the simulator,
``exchange_sim.tcp_proxy``, switches to its ``refuse`` mode: open connections reset, new ones refused) so
its stream has a gap that ``ap-1`` covers, stops both collectors with SIGTERM, runs the merge, its checks
and the gated cleanup through a SQLite Dagster instance (``depth-pipeline run`` and ``cleanup``), and prints
what happened. Every child runs in its own process group and is stopped in ``finally`` blocks and at exit,
so nothing is left behind even on Ctrl-C or a failed step.

Modules: ``processes`` (children, steps, waiting), ``readback`` (what each stream stored and what the
merge made of it, read back from the store), ``report`` (the final report), ``run`` (the demo's steps,
options and ``main``).
"""
