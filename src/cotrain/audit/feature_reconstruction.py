"""Per-sample deep-feature reconstruction from one batch gradient (patent CN114287009A).

Notation: the shared model is ``f_c . f_{n+1} . f_n ... f_1``; ``X = f_n(...)`` is the input of the
last block f_{n+1} (shape ``(B, *S)``, e.g. ``(B, 64, 7, 7)``) and ``E(X) = f_{n+1}(X)`` the feature
the head classifies (``(B, d)``). The server observes ``g_{n+1}`` and ``g_c``, the uploaded
gradients of the last block's and the head's parameters, and the batch size ``B``.

The patent's method optimises dummy features ``X_hat`` and soft pseudo-labels ``Y_hat`` so that the
gradients they induce match the observed ones::

    min_{X_hat, Y_hat}  d(g_{n+1}, g_hat_{n+1}) + lambda * d(g_c, g_hat_c)
    g_hat = d/dtheta  CE(f_c(f_{n+1}(X_hat)), softmax(Y_hat))

with ``d`` of :mod:`cotrain.audit.distance`, lambda = 0.1, learning rate alpha = 0.1, up to 5000
steps. Improvements here (each switchable, measured in ``docs/audit.md``):

* ``labels="recover"``: the labels are read from the head's gradient
  (:mod:`cotrain.audit.labels`) and fixed, removing ``B x K`` unknowns;
* ``init="auxiliary"``: ``X_hat`` starts at the server's own auxiliary samples of the recovered
  classes passed through the shared model (a data prior instead of noise);
* ``nonnegative``: ``X_hat`` is projected onto ``X >= 0`` after each step when the auxiliary
  features are non-negative (outputs of a ReLU / max-pool);
* ``exact_batch_one``: for ``B = 1``, ``E(X)`` is read exactly from the head's gradient
  (``dW[k] / db[k]``) and ``anchor_weight * d(E, f_{n+1}(X_hat))`` is added to the objective;
* ``head_solve``: for ``1 < B <= K`` (where the head's ``K d`` equations can determine the ``B d``
  unknowns), ``E(X)`` is first solved from the head's gradient alone
  (:mod:`cotrain.audit.head_solve`), used as the anchor of the
  ``X`` optimisation, and reported as ``E(X)`` when its head residual is the lower one;
  ``label_search`` first corrects the recovered label multiset by that residual (one wrong label
  makes the head's equations inconsistent);
* ``relative_lr``: the Adam step is ``lr * std(auxiliary block inputs)``, so one setting fits
  features of any scale; restarts keep the lowest objective; a time limit bounds the cost;
* ``stop="relative_change"``: a restart ends when its best objective has levelled off (relative
  decrease below ``rel_tol`` over ``window`` steps), not only at the absolute ``tolerance``, the
  step count or the time cap (:mod:`cotrain.audit.convergence`; each restart's
  :class:`~cotrain.audit.convergence.RestartReport` says which ended it);
* ``prior_weight``: a MAP-style prior term where the problem is under-determined (below).

Counting bound: the observed gradient gives ``#params(f_{n+1}) + #params(f_c)`` equations; the
unknowns are ``B * prod(S)`` (plus ``B * K`` for soft labels). :attr:`Reconstruction.equations_per_unknown`
reports the ratio; below 1 a unique solution cannot be expected without a prior.

Prior term (``prior_weight = mu``). With ``X_0`` the starting point (the f_n outputs of auxiliary
samples of the recovered classes, the ``auxiliary_prior`` of the benchmarks) the objective becomes::

    d(g_{n+1}, g_hat_{n+1}) + lambda * d(g_c, g_hat_c) [+ anchor term] + mu * ||X_hat - X_0||^2 / ||X_0||^2

The last term is a Gaussian log-prior centred on ``X_0`` with an isotropic variance proportional
to ``||X_0||^2``, i.e. a MAP estimate; it is scale free (the squared distance relative to the
start's squared norm, over the whole batch) and so comparable with ``d`` (in [0, 3]). It keeps
the directions the gradient does not determine at the start instead of letting the optimiser
fit the gradient with them. ``"auto"`` switches it on only where the counting bound
``equations / unknowns`` is below 1 (and the start is the auxiliary prior), with
``mu = AUTO_PRIOR_SCALE * unknowns / equations``. The motivation: both terms are means (``d``
over gradient entries, the prior term over feature entries), so a sum-of-squares MAP objective
divided by the number of equations weighs the prior term by ``unknowns / equations``; the scale
(1) and this form were chosen over constant weights on development uploads (``docs/audit.md``).
Elsewhere, and in the patent's setting, ``mu = 0``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from cotrain.audit.convergence import RestartReport, StopMonitor, check_stop_settings, resolve_stop_rule
from cotrain.audit.head_solve import head_residual, refine_labels, solve_embeddings
from cotrain.audit.labels import bias_signal, head_gradients, recover_label_counts, counts_to_labels, \
    single_sample_embedding
from cotrain.audit.objective import PriorTerm, ReconstructionProblem, prior_term  # noqa: F401  (re-export)
from cotrain.audit.threat_model import ObservedUpload, block_parameter_names, head_parameter_names
from cotrain.models.blocks import BlockModel
from cotrain.seeding import torch_generator

AUTO_PRIOR_SCALE = 1.0
"""``prior_weight="auto"`` uses ``mu = AUTO_PRIOR_SCALE * unknowns / equations`` where
``equations / unknowns < 1`` (chosen on development uploads, not the benchmark's: ``docs/audit.md``)."""


@dataclass(frozen=True)
class ReconstructionSettings:
    """How to reconstruct. Defaults are this library's improved method; :meth:`patent` gives the document's."""

    steps: int = 5000
    lr: float = 0.03
    relative_lr: bool = True
    head_weight: float = 0.1
    labels: str = "recover"
    init: str = "auxiliary"
    nonnegative: bool = True
    exact_batch_one: bool = True
    head_solve: bool = True
    label_search: bool = True
    """With ``head_solve``: correct the recovered label multiset by the head residual
    (:func:`cotrain.audit.head_solve.refine_labels`) before solving ``E``."""
    anchor_weight: float = 1.0
    restarts: int = 1
    schedule: str = "constant"
    time_limit: float | None = None
    """Wall seconds for the whole call (setup included), shared equally by the restarts; ``None``: no cap."""
    tolerance: float = 1e-7
    stop: str = "auto"
    """Convergence criterion of each restart (:data:`cotrain.audit.convergence.STOP_RULES`): ``"tolerance"``
    stops only when the objective falls below ``tolerance`` (or at ``steps`` / ``time_limit``);
    ``"relative_change"`` also stops when the lowest objective so far fell by less than the fraction
    ``rel_tol`` over the last ``window`` steps (reported as ``"converged"``); ``"auto"``: ``"relative_change"``
    where the prior term is on (``mu > 0``), ``"tolerance"`` where it is off (the default: at B = 512 it
    stops in about 20 s where the cap took 60, scores within 0.01, ``benchmarks/results/audit_convergence.json``;
    at B = 1 stopping at a plateau lost accuracy, so there it runs on). The benchmarks whose committed
    figures were measured before this default pass ``stop="tolerance"``."""
    rel_tol: float = 1e-3
    window: int = 100
    trace_every: int = 10
    """Every how many steps :attr:`RestartReport.trace` keeps the objective (and the last step)."""
    fused_adam: bool = False
    """torch's fused Adam kernel: the same update in fewer passes over ``X_hat`` (cheaper at large ``B``,
    ``docs/audit.md``), but its last bits differ, so off by default to keep committed figures reproducible."""
    seed: int = 0
    prior_weight: float | str = "auto"
    """``mu`` of the prior term ``mu * ||X_hat - X_0||^2 / ||X_0||^2`` (module docstring): a number
    >= 0 (0: off), or ``"auto"``: ``AUTO_PRIOR_SCALE * unknowns / equations`` where that exceeds 1, else 0."""

    def __post_init__(self) -> None:
        if self.labels not in ("recover", "soft"):
            raise ValueError(f"labels must be 'recover' or 'soft', got {self.labels!r}")
        if self.init not in ("auxiliary", "random"):
            raise ValueError(f"init must be 'auxiliary' or 'random', got {self.init!r}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        if self.steps < 0 or self.restarts < 1:
            raise ValueError("steps must be >= 0 and restarts >= 1")
        check_stop_settings(self.stop, self.rel_tol, self.window, self.trace_every)
        if isinstance(self.prior_weight, str):
            if self.prior_weight != "auto":
                raise ValueError(f"prior_weight must be 'auto' or a number >= 0, got {self.prior_weight!r}")
        elif not self.prior_weight >= 0:
            raise ValueError(f"prior_weight must be 'auto' or a number >= 0, got {self.prior_weight!r}")
        elif self.prior_weight > 0 and self.init != "auxiliary":
            raise ValueError("prior_weight > 0 pulls X_hat towards the auxiliary start: it needs init='auxiliary'")

    @classmethod
    def patent(cls, **overrides: object) -> "ReconstructionSettings":
        """The document's method: random init, soft pseudo-labels, constant step, no projections, no prior term."""
        base = cls(lr=0.1, relative_lr=False, labels="soft", init="random", nonnegative=False,
                   exact_batch_one=False, head_solve=False, label_search=False, schedule="constant",
                   prior_weight=0.0)
        return replace(base, **overrides)  # type: ignore[arg-type]


@dataclass
class AuxiliaryPrior:
    """The server's own data seen through the shared model: ``block_inputs`` ``(N, *S)`` and ``labels`` ``(N,)``."""

    block_inputs: torch.Tensor
    labels: torch.Tensor


@torch.no_grad()
def auxiliary_prior(model: BlockModel, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 512) -> AuxiliaryPrior:
    """Inputs of the last block for the server's auxiliary samples ``x`` (``model.features(x, n)``)."""
    model.eval()
    n = model.num_blocks - 1
    feats = torch.cat([model.features(x[s:s + batch_size], n) for s in range(0, len(x), batch_size)])
    return AuxiliaryPrior(block_inputs=feats, labels=y.clone())


@dataclass
class Reconstruction:
    """Result of one reconstruction.

    ``features``: ``X_hat`` ``(B, *S)``; ``embeddings``: ``E(X_hat)`` ``(B, d)`` (the exact read when
    ``B = 1``); ``labels``: recovered (or arg-max pseudo) labels ``(B,)``; ``objective``: final
    value; ``equations`` / ``unknowns`` and their ratio at the level of ``X``; ``prior_weight``:
    the ``mu`` used (``"auto"`` resolved); ``restarts``: one :class:`RestartReport` per restart (why it
    stopped, steps, wall and CPU seconds, objective, thinned trace); ``best_restart`` indexes the kept one.
    """

    features: torch.Tensor
    embeddings: torch.Tensor
    labels: torch.Tensor
    objective: float
    steps: int
    seconds: float
    equations: int
    unknowns: int
    embedding_unknowns: int
    prior_weight: float = 0.0
    restarts: list[RestartReport] = field(default_factory=list)
    best_restart: int = 0

    @property
    def stop_reason(self) -> str:
        """Why the kept restart stopped (``"converged"``, ``"tolerance"``, ``"time_cap"`` or ``"max_steps"``)."""
        return self.restarts[self.best_restart].reason if self.restarts else "max_steps"

    @property
    def equations_per_unknown(self) -> float:
        return self.equations / max(self.unknowns, 1)

    @property
    def equations_per_embedding_unknown(self) -> float:
        return self.equations / max(self.embedding_unknowns, 1)


def counting_bound(model: BlockModel, batch_size: int, feature_shape: tuple[int, ...], *,
                   soft_labels: bool = False, num_classes: int = 0) -> tuple[int, int]:
    """``(equations, unknowns)``: parameters of ``f_{n+1}`` and ``f_c`` vs ``B * prod(S)`` (+ ``B * K``)."""
    last, head = model.last_block_and_head()
    equations = sum(p.numel() for p in last.parameters()) + sum(p.numel() for p in head.parameters())
    unknowns = batch_size * math.prod(feature_shape) + (batch_size * num_classes if soft_labels else 0)
    return equations, unknowns


def _initial_features(prior: AuxiliaryPrior | None, labels: torch.Tensor, shape: tuple[int, ...],
                      settings: ReconstructionSettings, gen: torch.Generator) -> torch.Tensor:
    b = labels.numel()
    if settings.init == "auxiliary":
        if prior is None:
            raise ValueError("init='auxiliary' needs the server's auxiliary prior (auxiliary_prior(...))")
        picks = []
        pool_all = torch.arange(len(prior.labels))
        for k in labels.tolist():
            pool = (prior.labels == k).nonzero().flatten()
            pool = pool if pool.numel() else pool_all
            picks.append(int(pool[torch.randint(pool.numel(), (1,), generator=gen)]))
        return prior.block_inputs[torch.tensor(picks)].clone().reshape(b, *shape)
    scale = float(prior.block_inputs.std()) if prior is not None else 1.0
    x = torch.randn((b, *shape), generator=gen) * scale
    return x.abs() if settings.nonnegative else x


def resolve_prior_weight(settings: ReconstructionSettings, equations: int, unknowns: int) -> float:
    """The prior term's weight ``mu`` for one reconstruction (see :attr:`ReconstructionSettings.prior_weight`).

    ``"auto"``: ``AUTO_PRIOR_SCALE * unknowns / equations`` when the counting bound
    ``equations / unknowns`` is below 1 and ``X_hat`` starts at the auxiliary prior, else 0; a
    number is used as given.
    """
    if settings.prior_weight == "auto":
        on = settings.init == "auxiliary" and equations < unknowns
        return AUTO_PRIOR_SCALE * unknowns / equations if on else 0.0
    return float(settings.prior_weight)


def _optimise(problem: ReconstructionProblem, prior: AuxiliaryPrior | None, settings: ReconstructionSettings,
              restart: int, time_limit: float | None) -> tuple[float, torch.Tensor, torch.Tensor, RestartReport]:
    """One restart: Adam on ``X_hat`` (and ``Y_hat``) until ``settings.stop`` says so; ``(objective, X_hat, labels, report)``."""
    b = problem.batch_size
    gen = torch_generator(settings.seed, "reconstruct", restart)
    x0 = _initial_features(prior, problem.labels, problem.shape, settings, gen)
    start = PriorTerm(x0) if problem.prior_weight else None
    x_hat = x0.clone().requires_grad_(True)
    variables = [x_hat]
    y_hat = None
    if problem.soft:
        y_hat = (0.1 * torch.randn((b, problem.num_classes), generator=gen)).requires_grad_(True)
        variables.append(y_hat)
    base_lr = settings.lr * (float(prior.block_inputs.std()) if settings.relative_lr and prior is not None else 1.0)
    opt = torch.optim.Adam(variables, lr=base_lr, fused=settings.fused_adam or None)
    monitor = StopMonitor(rule=resolve_stop_rule(settings.stop, problem.prior_weight), tolerance=settings.tolerance,
                          rel_tol=settings.rel_tol, window=settings.window, trace_every=settings.trace_every,
                          time_limit=time_limit)
    objective = float("inf")
    reason = None
    for step in range(1, settings.steps + 1):
        if settings.schedule == "cosine":
            for group in opt.param_groups:
                group["lr"] = base_lr * 0.5 * (1 + math.cos(math.pi * (step - 1) / max(settings.steps, 1)))
        obj = problem.objective(x_hat, y_hat, start)
        var_grads = torch.autograd.grad(obj, variables)
        for v, gv in zip(variables, var_grads):
            v.grad = gv
        opt.step()
        if problem.nonnegative:
            with torch.no_grad():
                x_hat.clamp_(min=0.0)
        objective = float(obj.detach())
        reason = monitor.update(step, objective)
        if reason is not None:
            break
    labels = problem.labels if y_hat is None else y_hat.detach().argmax(1)
    return objective, x_hat.detach().clone(), labels, monitor.report(restart, reason)


def reconstruct_features(model: BlockModel, upload: ObservedUpload, *, prior: AuxiliaryPrior | None = None,
                         settings: ReconstructionSettings = ReconstructionSettings(),
                         class_probs: torch.Tensor | None = None,
                         feature_shape: tuple[int, ...] | None = None) -> Reconstruction:
    """Reconstruct the batch's last-block inputs ``X`` and features ``E(X)`` from one upload.

    ``model`` is the shared architecture (its state is replaced by a private copy of the upload's);
    ``prior`` the server's auxiliary features; ``class_probs`` the ``(K, K)`` matrix for label-count
    recovery; ``feature_shape`` is ``S`` (taken from ``prior`` when omitted).
    """
    t0 = time.perf_counter()
    net = upload.shared_model(model)
    for p in net.parameters():
        p.requires_grad_(True)
    last, head = net.last_block_and_head()
    last.train()
    head.train()
    if upload.batch_size is None:
        raise ValueError("the upload carries no batch size: set ObservedUpload.batch_size (e.g. from "
                         "cotrain.audit.batch_size.estimate_batch_size) or call cotrain.audit.api.audit_upload, "
                         "which estimates it")
    b = int(upload.batch_size)
    if feature_shape is None:
        if prior is None:
            raise ValueError("give feature_shape or an auxiliary prior")
        feature_shape = tuple(prior.block_inputs.shape[1:])
    shape = tuple(feature_shape)
    linear_head = isinstance(head, nn.Linear)
    num_classes = head.out_features if linear_head else 0
    block_names = block_parameter_names(net, -1)
    head_names = head_parameter_names(net)
    params = dict(net.named_parameters())
    dw, db = head_gradients(net, upload)
    labels = counts_to_labels(recover_label_counts(bias_signal(dw, db), b, class_probs))
    anchor = single_sample_embedding(dw, db).detach() if (b == 1 and settings.exact_batch_one) else None
    nonneg = settings.nonnegative and (prior is None or float(prior.block_inputs.min()) >= 0.0)
    soft = settings.labels == "soft"
    equations, unknowns = counting_bound(net, b, shape, soft_labels=soft, num_classes=num_classes)
    with torch.no_grad():
        last.eval()
        d = last(torch.zeros((1, *shape))).reshape(1, -1).shape[1]
        last.train()
    solved = None
    if (anchor is None and settings.head_solve and linear_head and not soft and 1 < b <= num_classes
            and prior is not None):
        def init_for(lab: torch.Tensor) -> torch.Tensor:
            init0 = _initial_features(prior, lab, shape, settings, torch_generator(settings.seed, "reconstruct", 0))
            with torch.no_grad():
                return last(init0).reshape(b, -1)

        # a quarter of the budget for the head solve(s): two full solves when the search changes the labels
        limit = None if settings.time_limit is None else settings.time_limit / (8 if settings.label_search else 4)
        solved, res = solve_embeddings(head.weight, head.bias, dw, db, labels, init_for(labels), nonnegative=nonneg,
                                       time_limit=limit)
        if settings.label_search:
            searched = refine_labels(head.weight, head.bias, dw, db, labels, init_for, nonnegative=nonneg)
            if not torch.equal(searched, labels):  # both sorted
                # the screen is a short solve: keep the new multiset only if its full solve is better too
                alt, alt_res = solve_embeddings(head.weight, head.bias, dw, db, searched, init_for(searched),
                                                nonnegative=nonneg, time_limit=limit)
                if alt_res < res:
                    solved, labels = alt, searched
        anchor = solved.detach()
    budget = settings.time_limit  # covers the whole call: what the setup and the head solve used is gone
    if budget is not None:
        budget = max(budget - (time.perf_counter() - t0), 0.0)

    mu = resolve_prior_weight(settings, equations, unknowns)
    problem = ReconstructionProblem(
        last=last, head=head, block_params=[params[n] for n in block_names], head_params=[params[n] for n in head_names],
        g_block=[upload.gradients[n].detach() for n in block_names],
        g_head=[upload.gradients[n].detach() for n in head_names], labels=labels, shape=shape,
        num_classes=num_classes, anchor=anchor, nonnegative=nonneg, soft=soft, prior_weight=mu,
        head_weight=settings.head_weight, anchor_weight=settings.anchor_weight)
    restart_limit = None if budget is None else budget / settings.restarts
    runs = [_optimise(problem, prior, settings, r, restart_limit) for r in range(settings.restarts)]
    kept = min(range(len(runs)), key=lambda r: runs[r][0])  # the first of equal objectives, as before
    objective, x_best, final_labels, report = runs[kept]
    with torch.no_grad():
        emb = last(x_best).reshape(b, -1)
    if b == 1 and anchor is not None:
        emb = anchor.reshape(1, -1).clone()
    elif solved is not None and linear_head:
        onehot = nn.functional.one_hot(labels, num_classes).to(emb.dtype)
        w, bias = head.weight.detach(), None if head.bias is None else head.bias.detach()
        if head_residual(w, bias, dw, db, onehot, solved) < head_residual(w, bias, dw, db, onehot, emb):
            emb = solved.clone()
    return Reconstruction(features=x_best, embeddings=emb, labels=final_labels, objective=objective,
                          steps=report.steps, seconds=time.perf_counter() - t0, equations=equations,
                          unknowns=unknowns, embedding_unknowns=b * d, prior_weight=mu,
                          restarts=[run[3] for run in runs], best_restart=kept)
