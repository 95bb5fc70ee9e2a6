"""Does ``torch.compile`` make a participant's local step faster? Seconds per SGD step of the small CNN
(width 16, MNIST-shaped input, one thread), eager against compiled, for the batch sizes of
``simulation_throughput.py``'s jobs (32: ``compute``, 8: ``overhead``); compile time apart.

Eager and compiled steps alternate in blocks, so a change of machine load hits both alike.

    nice -n 10 python benchmarks/compile_local_step.py --json benchmarks/results/compile_local_step.json
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch
from torch.nn.functional import cross_entropy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, parser, write_json  # noqa: E402

from cotrain.models import build_model  # noqa: E402


def step_fn(model: torch.nn.Module, opt: torch.optim.Optimizer):
    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss.detach()
    return step


def time_block(step, x, y, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        step(x, y)
    return (time.perf_counter() - t0) / n


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    args = p.parse_args()
    torch.set_num_threads(1)
    blocks, per_block = (3, 10) if args.quick else (7, 30)
    rows = []
    for batch in (32, 8):
        g = torch.Generator().manual_seed(0)
        x, y = torch.rand(batch, 1, 28, 28, generator=g), torch.randint(0, 10, (batch,), generator=g)
        eager_model = build_model("small_cnn", input_shape=(1, 28, 28), num_classes=10, width=16, seed=0)
        compiled_model = build_model("small_cnn", input_shape=(1, 28, 28), num_classes=10, width=16, seed=0)
        eager = step_fn(eager_model, torch.optim.SGD(eager_model.parameters(), lr=0.05))
        compiled_forward = torch.compile(compiled_model)
        compiled = step_fn(compiled_forward, torch.optim.SGD(compiled_model.parameters(), lr=0.05))
        t0 = time.perf_counter()
        compiled(x, y)  # the first call compiles forward and backward
        compile_s = time.perf_counter() - t0
        eager(x, y)
        e, c = [], []
        for _ in range(blocks):
            e.append(time_block(eager, x, y, per_block))
            c.append(time_block(compiled, x, y, per_block))
        rows.append({"batch_size": batch, "eager_ms_per_step": round(1000 * statistics.median(e), 3),
                     "compiled_ms_per_step": round(1000 * statistics.median(c), 3),
                     "speedup": round(statistics.median(e) / statistics.median(c), 3), "compile_s": round(compile_s, 2),
                     "blocks": blocks, "steps_per_block": per_block})
        print(rows[-1])
    write_json(args.json, {"rows": rows, "quick": args.quick, "threads": 1, "model": "small_cnn width 16",
                           "environment": environment()})


if __name__ == "__main__":
    main()
