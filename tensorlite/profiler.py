"""Where does a training step's time go? Per-op forward and backward time, and the rest.

    with tensorlite.profiler.profile() as prof:
        loss = model(x, y)[1]; loss.backward(); optimizer.step()
    print(prof.table())

Op time is measured around each op's own `forward` and `backward` (the array work, mostly in
kernels). Everything else in the block's wall time is the engine's and the caller's Python:
building graph nodes, the topological sort, the gradient bookkeeping (summing the gradients that
reach a node along several paths, placing the gradients of slices such as `split`'s pieces,
copying leaf gradients into `.grad`), the optimizer call.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict

from tensorlite.autograd.grad_mode import _State


class Profiler:
    def __init__(self):
        self.seconds = defaultdict(float)  # (op name, "forward"|"backward") -> seconds
        self.calls = defaultdict(int)
        self.wall_seconds = 0.0

    def record(self, op_name: str, phase: str, seconds: float) -> None:
        self.seconds[(op_name, phase)] += seconds
        self.calls[(op_name, phase)] += 1

    @property
    def op_seconds(self) -> float:
        return sum(self.seconds.values())

    def rows(self):
        """[(op, forward ms, backward ms, calls)] sorted by total time, plus the totals."""
        names = sorted({name for name, _ in self.seconds},
                       key=lambda n: -(self.seconds[(n, "forward")] + self.seconds[(n, "backward")]))
        return [(name, 1e3 * self.seconds[(name, "forward")], 1e3 * self.seconds[(name, "backward")],
                 self.calls[(name, "forward")]) for name in names]

    def to_dict(self) -> dict:
        return {
            "wall_ms": 1e3 * self.wall_seconds,
            "op_ms": 1e3 * self.op_seconds,
            "other_ms": 1e3 * (self.wall_seconds - self.op_seconds),
            "ops": [{"op": n, "forward_ms": f, "backward_ms": b, "calls": c}
                    for n, f, b, c in self.rows()],
        }

    def table(self, scale: float = 1.0) -> str:
        """Markdown table; `scale` divides every figure (e.g. the number of profiled steps)."""
        lines = ["| op | calls | forward ms | backward ms | total ms | share |",
                 "|---|---:|---:|---:|---:|---:|"]
        wall = 1e3 * self.wall_seconds / scale
        for name, forward, backward, calls in self.rows():
            total = (forward + backward) / scale
            lines.append(f"| {name} | {calls / scale:.0f} | {forward / scale:.2f} | "
                         f"{backward / scale:.2f} | {total:.2f} | {100 * total / wall:.1f}% |")
        op_ms = 1e3 * self.op_seconds / scale
        lines.append(f"| **all ops** | | | | {op_ms:.2f} | {100 * op_ms / wall:.1f}% |")
        lines.append(f"| **outside ops** (Python, graph, optimizer) | | | | {wall - op_ms:.2f} | "
                     f"{100 * (wall - op_ms) / wall:.1f}% |")
        lines.append(f"| **wall** | | | | {wall:.2f} | 100% |")
        return "\n".join(lines)


@contextlib.contextmanager
def profile():
    """Profile every op run inside the block; yields the Profiler."""
    profiler = Profiler()
    previous = _State.profiler
    _State.profiler = profiler
    started = time.perf_counter()
    try:
        yield profiler
    finally:
        profiler.wall_seconds += time.perf_counter() - started
        _State.profiler = previous
