"""When one restart of the feature reconstruction stops, and the record of how it got there.

A restart of :func:`cotrain.audit.feature_reconstruction.reconstruct_features` runs Adam on the
objective ``J_t`` (the value at step ``t``, before that step's update) and stops at the first of:

* ``"tolerance"``: ``J_t < tolerance`` (an absolute threshold, ``1e-7`` by default);
* ``"converged"`` (rule ``"relative_change"`` only): with ``m_t = min_{s <= t} J_s`` the lowest
  objective so far and ``t > window``,
  ``(m_{t - window} - m_t) / |m_{t - window}| < rel_tol``, i.e. the best objective improved by
  less than the fraction ``rel_tol`` over the last ``window`` steps. The running minimum makes the
  rule insensitive to Adam's oscillation on the non-smooth objective (ReLU switches); where the
  prior term gives the objective a positive minimum (``prior_weight > 0``, large batches) the
  absolute tolerance is never reached and this is the rule that ends the run;
* ``"time_cap"``: the restart's share of ``time_limit`` (wall clock) has passed;
* ``"max_steps"``: ``steps`` Adam steps have run.

Rules are registered in :data:`STOP_RULES` (``ReconstructionSettings.stop`` names one, or
``"auto"``: ``"relative_change"`` where the prior term is on, ``"tolerance"`` where it is off; see
:func:`resolve_stop_rule`). Each restart leaves a :class:`RestartReport`: why it stopped, steps, wall and CPU seconds, the
objective at stop and a thinned trace of the objective.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from cotrain.errors import ConfigError
from cotrain.registry import Registry

StopRule = Callable[["StopMonitor", float], "str | None"]


def _tolerance_rule(monitor: "StopMonitor", objective: float) -> str | None:
    return "tolerance" if objective < monitor.tolerance else None


def _relative_change_rule(monitor: "StopMonitor", objective: float) -> str | None:
    reason = _tolerance_rule(monitor, objective)
    if reason is not None:
        return reason
    best = monitor.best_history
    if len(best) <= monitor.window:
        return None
    before, now = best[0], best[-1]
    if not math.isfinite(before):
        return None
    return "converged" if before - now < monitor.rel_tol * abs(before) else None


STOP_RULES: Registry[StopRule] = Registry("stop rule")
"""Stopping rules by name (module docstring); each returns a stop reason or ``None`` to go on.
Another rule is ``STOP_RULES.add(name, rule)`` with ``rule(monitor, objective) -> reason | None``."""
STOP_RULES.add("tolerance", _tolerance_rule)
STOP_RULES.add("relative_change", _relative_change_rule)

STOP_REASONS = ("converged", "tolerance", "time_cap", "max_steps")


def resolve_stop_rule(stop: str, prior_weight: float) -> str:
    """The rule a restart uses: ``stop`` itself, or for ``"auto"`` ``"relative_change"`` when ``prior_weight > 0``.

    Why: with the prior term on, the objective has a positive minimum and levels off, and stopping
    there cost no measurable quality at B = 8 ... 512 (``docs/audit.md``); with it off (B = 1 on the
    benchmark's model, more equations than unknowns) the objective keeps falling slowly after a
    plateau, and stopping at the plateau lost accuracy of X, so only the tolerance stops such a run.
    """
    if stop == "auto":
        return "relative_change" if prior_weight > 0 else "tolerance"
    return stop


def check_stop_settings(stop: str, rel_tol: float, window: int, trace_every: int) -> None:
    """One-line :class:`cotrain.errors.ConfigError` for an unknown rule or out-of-range parameters."""
    if stop != "auto" and stop not in STOP_RULES:
        raise ConfigError(f"stop must be 'auto' or one of {STOP_RULES.names()}, got {stop!r}")
    if not rel_tol >= 0:
        raise ConfigError(f"rel_tol must be >= 0, got {rel_tol!r}")
    if window < 1 or trace_every < 1:
        raise ConfigError(f"window and trace_every must be >= 1, got {window!r} and {trace_every!r}")


@dataclass
class RestartReport:
    """How one restart ended: ``reason`` (one of :data:`STOP_REASONS`), ``steps`` run, ``wall_seconds``
    and ``cpu_seconds`` (process CPU time, all threads) of its optimisation loop, ``objective`` at stop
    (the last step's value) and ``best_objective`` (the lowest seen), and ``trace``: ``(step, objective)``
    every ``trace_every`` steps plus the last."""

    restart: int
    reason: str
    steps: int
    wall_seconds: float
    cpu_seconds: float
    objective: float
    best_objective: float
    trace: list[tuple[int, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["trace"] = [[s, v] for s, v in self.trace]
        return out


class StopMonitor:
    """Feed it each step's objective (:meth:`update`); it says when and why to stop and keeps the trace."""

    def __init__(self, *, rule: str = "tolerance", tolerance: float = 1e-7, rel_tol: float = 1e-3,
                 window: int = 100, trace_every: int = 10, time_limit: float | None = None) -> None:
        check_stop_settings(rule, rel_tol, window, trace_every)
        self.rule = STOP_RULES.get(rule)
        self.tolerance, self.rel_tol, self.window = tolerance, rel_tol, window
        self.trace_every, self.time_limit = trace_every, time_limit
        self.best_history: deque[float] = deque(maxlen=window + 1)
        self.best = math.inf
        self.trace: list[tuple[int, float]] = []
        self._last: tuple[int, float] | None = None
        self._wall0, self._cpu0 = time.perf_counter(), time.process_time()

    def update(self, step: int, objective: float) -> str | None:
        """Record step ``step``'s objective; the stop reason, or ``None`` to take another step."""
        self.best = min(self.best, objective)
        self.best_history.append(self.best)
        self._last = (step, objective)
        if step % self.trace_every == 0:
            self.trace.append((step, objective))
        reason = self.rule(self, objective)
        if reason is None and self.time_limit is not None and time.perf_counter() - self._wall0 > self.time_limit:
            reason = "time_cap"
        return reason

    def report(self, restart: int, reason: str | None) -> RestartReport:
        """The restart's record; ``reason=None`` (the loop ran out of steps) reads ``"max_steps"``."""
        step, objective = self._last if self._last is not None else (0, math.inf)
        trace = list(self.trace)
        if self._last is not None and (not trace or trace[-1][0] != step):
            trace.append(self._last)
        return RestartReport(restart=restart, reason=reason or "max_steps", steps=step,
                             wall_seconds=time.perf_counter() - self._wall0,
                             cpu_seconds=time.process_time() - self._cpu0, objective=objective,
                             best_objective=self.best, trace=trace)
