"""Self CPU and page faults per function of our pipeline modules, for ``bench_merge ours`` or ``floor``.

    python -m benchmarks.self_cpu ours STORE DATE          # validate both streams + merge (a copy of a day!)
    python -m benchmarks.self_cpu floor STORE DATE OUT     # the floor, same modules wrapped

Every Python function and method defined in :data:`MODULES` is wrapped; a call's *self* figures are its
thread's user CPU, system CPU and minor page faults (``getrusage(RUSAGE_THREAD)``) minus those of the wrapped
calls it made, so nested functions are not counted twice, and work on helper threads is charged to the
function that ran there. Compiled code and library calls count toward the Python function that called them.

Why: end-to-end CPU of one run moves by 10-20 % on this shared VM, but the self figures of one function are
steady, and ``ours`` and ``floor`` share the parse functions (``events.*``, ``raw_format.*``): the same
function costing more in ours than in the floor is work ours makes the shared code do (page faults of fresh
memory, threads competing for the two cores), not work of its own (benchmarks/NOTES.md, "Eighth session").
The wrappers cost ~1 µs a call: compare the two modes with each other, not with ``bench_merge``'s totals.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import resource
import sys
import threading
import types
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MODULES = (
    "depth_core.events",
    "depth_core.raw_format",
    "depth_core.validate",
    "depth_core.level_parts",
    "depth_core.merge",
    "depth_core.checks",
    "depth_core.book",
    "depth_core.carryover",
    "depth_core.storeio",
    "depth_core.memory",
    "depth_core.idline",
    "depth_core.validated_layout",
    "depth_core.publish",
    "depth_core.quality",
    "depth_store.local",
)


@dataclass
class SelfCosts:
    """Self user CPU, system CPU (seconds), minor page faults and calls, per function label."""

    user: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    system: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    faults: Counter[str] = field(default_factory=Counter)
    calls: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stacks: threading.local = field(default_factory=threading.local)

    def wrap(self, fn: Callable[..., Any], label: str) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            stack: list[list[float]] | None = getattr(self._stacks, "stack", None)
            if stack is None:
                stack = self._stacks.stack = []
            start = _thread_usage()
            stack.append([0.0, 0.0, 0.0])  # what the wrapped calls inside this one used
            try:
                return fn(*args, **kwargs)
            finally:
                end = _thread_usage()
                inner = stack.pop()
                used = [b - a for a, b in zip(start, end, strict=True)]
                with self._lock:
                    self.user[label] += used[0] - inner[0]
                    self.system[label] += used[1] - inner[1]
                    self.faults[label] += int(used[2] - inner[2])
                    self.calls[label] += 1
                if stack:
                    for i in range(3):
                        stack[-1][i] += used[i]

        return wrapper

    def table(self, top: int = 40) -> str:
        total = Counter({k: self.user[k] + self.system[k] for k in self.calls})
        lines = [f"{'self s':>7} {'user':>6} {'sys':>6} {'calls':>7} {'faults':>8}  function"]
        for label, cpu in total.most_common(top):
            lines.append(
                f"{cpu:7.2f} {self.user[label]:6.2f} {self.system[label]:6.2f} {self.calls[label]:7d} "
                f"{self.faults[label]:8d}  {label}"
            )
        lines.append(f"{sum(total.values()):7.2f} in wrapped functions")
        return "\n".join(lines)


def _thread_usage() -> tuple[float, float, float]:
    r = resource.getrusage(resource.RUSAGE_THREAD)
    return r.ru_utime, r.ru_stime, float(r.ru_minflt)


def wrap_modules(costs: SelfCosts, modules: list[types.ModuleType]) -> int:
    """Wrap the modules' own functions and their classes' methods in place, and every reference another of
    the modules holds to one of those functions (``from depth_core.events import parse_objects``); returns
    how many were wrapped."""
    wrapped: dict[Callable[..., Any], Callable[..., Any]] = {}
    for module in modules:
        short = module.__name__.rsplit(".", 1)[-1]
        for name, obj in list(vars(module).items()):
            if isinstance(obj, types.FunctionType) and obj.__module__ == module.__name__:
                wrapped[obj] = costs.wrap(obj, f"{short}.{name}")
            elif inspect.isclass(obj) and obj.__module__ == module.__name__:
                for attr, value in list(vars(obj).items()):
                    method = not attr.startswith("__") or attr == "__init__"
                    if isinstance(value, types.FunctionType) and method:
                        setattr(obj, attr, costs.wrap(value, f"{short}.{name}.{attr}"))
    for module in modules:
        for name, obj in list(vars(module).items()):
            if isinstance(obj, types.FunctionType) and obj in wrapped:
                setattr(module, name, wrapped[obj])
    return len(wrapped)


def main(argv: list[str]) -> None:
    if len(argv) < 3 or argv[0] not in ("ours", "floor"):
        sys.exit(__doc__)
    costs = SelfCosts()
    wrap_modules(costs, [importlib.import_module(name) for name in MODULES])
    from benchmarks import bench_merge

    sys.argv = ["bench_merge", *argv]
    bench_merge.main()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        f"process: user {usage.ru_utime:.1f} s, system {usage.ru_stime:.1f} s, minor faults {usage.ru_minflt}"
    )
    print(costs.table())


if __name__ == "__main__":
    main(sys.argv[1:])
