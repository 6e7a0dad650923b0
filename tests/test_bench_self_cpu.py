"""The self-CPU profiler of the benchmarks (benchmarks/self_cpu.py) charges each function its own work only,
on whatever thread it ran, and also wraps the references other modules imported."""

from __future__ import annotations

import threading
import types

from benchmarks.self_cpu import SelfCosts, wrap_modules


def _spin(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i
    return total


def _make_modules() -> tuple[types.ModuleType, types.ModuleType]:
    inner = types.ModuleType("fake.inner")
    exec(  # a module built for the test
        "from tests.test_bench_self_cpu import _spin\n"
        "def child(n):\n    return _spin(n)\n"
        "def parent(n):\n    return child(n) + child(n)\n"
        "class Worker:\n    def run(self, n):\n        return parent(n)\n",
        inner.__dict__,
    )
    for obj in (inner.child, inner.parent, inner.Worker):
        obj.__module__ = "fake.inner"
    outer = types.ModuleType("fake.outer")
    outer.parent = inner.parent  # as ``from fake.inner import parent`` would bind it
    return inner, outer


def test_self_time_excludes_wrapped_calls_and_counts_helper_threads() -> None:
    inner, outer = _make_modules()
    costs = SelfCosts()
    assert wrap_modules(costs, [inner, outer]) == 2  # child and parent (the method is wrapped in place)
    outer.parent(200_000)  # through the other module's reference
    thread = threading.Thread(target=inner.Worker().run, args=(200_000,))
    thread.start()
    thread.join()
    assert costs.calls["inner.child"] == 4
    assert costs.calls["inner.parent"] == 2
    assert costs.calls["inner.Worker.run"] == 1
    child_cpu = costs.user["inner.child"] + costs.system["inner.child"]
    parent_cpu = costs.user["inner.parent"] + costs.system["inner.parent"]
    assert child_cpu > 0.01  # four spins of 200k iterations, on two threads
    assert parent_cpu < child_cpu / 4  # the spinning is the child's, not charged twice
    assert "inner.child" in costs.table()
