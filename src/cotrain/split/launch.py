"""Start the centre and the agents of a split-learning run as separate processes on one machine.

Each agent process builds its own :class:`Participant` (from a picklable factory, e.g. one that
loads that agent's shard), serves it over :mod:`cotrain.runtime.rpc`, and exits when the centre shuts
the channel down. The centre process runs ``centre(grid)`` on an :class:`~cotrain.runtime.rpc.RpcGrid`
and its (picklable) result comes back to the caller. Every process started here is stopped before
:func:`launch` returns, on success, error or timeout.
"""

from __future__ import annotations

import io
import multiprocessing as mp
import os
import queue
import time
import traceback
from typing import Any, Callable, Mapping

import torch

from cotrain.runtime.grid import Participant
from cotrain.runtime.ports import free_port
from cotrain.runtime.rpc import RpcGrid, serve


def _agent_main(factory: Callable[[], Participant], rank: int, world_size: int, address: str, port: int,
                timeout: float, threads: int) -> None:
    torch.set_num_threads(threads)
    _warm_up()
    serve(factory(), rank=rank, world_size=world_size, address=address, port=port, timeout=timeout)


def _warm_up() -> None:
    """Pay torch's lazy imports (the first optimiser costs seconds) before serving, not in the first message."""
    w = torch.zeros(1, requires_grad=True)
    torch.optim.SGD([w], lr=0.1).step()


def _centre_main(centre: Callable[[RpcGrid], Any], world_size: int, address: str, port: int, timeout: float,
                 threads: int, results: Any) -> None:
    torch.set_num_threads(threads)
    _warm_up()
    try:
        with RpcGrid(world_size=world_size, address=address, port=port, timeout=timeout) as grid:
            out = centre(grid)
        buffer = io.BytesIO()
        torch.save(out, buffer)
        results.put(("ok", buffer.getvalue()))
    except BaseException:  # noqa: BLE001 - the traceback goes back to the caller
        results.put(("error", traceback.format_exc()))


def launch(centre: Callable[[RpcGrid], Any], agents: Mapping[str, Callable[[], Participant]], *,
           address: str = "127.0.0.1", port: int | None = None, timeout: float = 120.0, threads: int = 1) -> Any:
    """Run ``centre`` and one process per agent (ids sorted: ranks 1..K); return ``centre``'s result.

    Factories and ``centre`` must be picklable (module-level functions or ``functools.partial``), as
    processes are spawned. Raises RuntimeError with the centre's traceback if it failed, TimeoutError
    if it did not finish within ``timeout`` seconds.
    """
    ctx = mp.get_context("spawn")
    port = free_port(address) if port is None else port
    world_size = len(agents) + 1
    results = ctx.Queue()
    procs = [ctx.Process(target=_centre_main, args=(centre, world_size, address, port, timeout, threads, results),
                         name="centre", daemon=True)]
    for rank, pid in enumerate(sorted(agents), start=1):
        procs.append(ctx.Process(target=_agent_main, args=(agents[pid], rank, world_size, address, port, timeout,
                                                           threads), name=f"agent-{pid}", daemon=True))
    env_before = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        for p in procs:
            p.start()
        status, payload = _wait(results, procs, timeout)
        if status != "ok":
            raise RuntimeError(f"the centre failed:\n{payload}")
        for p in procs:
            p.join(timeout=30)
        return torch.load(io.BytesIO(payload), weights_only=False)
    finally:
        _stop(procs)
        if env_before is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = env_before


def _wait(results: Any, procs: list[Any], timeout: float) -> tuple[str, Any]:
    """The centre's (status, payload); fails early when a process died before the centre answered."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return results.get(timeout=0.2)
        except queue.Empty:
            dead = [f"{p.name} (exit code {p.exitcode})" for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"process(es) died before the centre finished: {', '.join(dead)}") from None
    raise TimeoutError(f"the centre did not finish within {timeout} s")


def _stop(procs: list[Any]) -> None:
    """Terminate, then kill, every process of ``procs`` still alive; reap them all."""
    for p in procs:
        if p.pid is not None and p.is_alive():
            p.terminate()
    for p in procs:
        if p.pid is None:
            continue
        p.join(timeout=5)
        if p.is_alive():
            p.kill()
            p.join(timeout=5)
