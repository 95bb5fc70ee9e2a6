"""The patent's method, read literally: user groups, scores, scaled steps, group-then-global
aggregation and a dynamic per-group exclusion threshold ("基于联邦分裂学习的模型训练方法", Beijing
University of Posts and Telecommunications, 2024; definitions and reasons in docs/robust.md).

The rule works on updates: row x_i (d,) is participant i's upload minus the global state w (or its
gradient when the uploads are gradients), n_i its example count (``Upload.weight``). Each round:

1. Groups G_1..G_m, m = max(2, floor(n / group_size)): a seeded permutation cut into near-equal
   parts (stream (seed, "credit_groups", round)), or ``Upload.group`` when the server set them.
2. Score (a risk score): c_i = max(min_score, ||x_i - m_{G(i)}|| / D) with m_G the coordinate-wise
   median of the group's rows and D the median of the group's distances to it.
3. Scaling: s_i = k lambda_i c_i / sum_{j in G(i)} lambda_j c_j, lambda_i = 1 (``influence =
   "uniform"``) or n_i (``"examples"``); k = |G(i)| unless set, so s_i = 1 when the scores are equal.
4. Target update: w'_i = w_i - (eta / s_i) g_i with w_i = w (the state i started from) and g_i = -x_i
   (its pseudo-gradient), i.e. u_i = w'_i - w = (eta / s_i) x_i in update space.
7. Threshold per group: T_G = median_G(c) + kappa * 1.4826 * MAD_G(c); i with c_i > T_G is excluded
   (applied before 5 and 6; s_i keeps the whole group in its sum, as the formula is written).
5. Group update: U_G = sum_{i in G kept} n_i u_i / N_G, N_G = sum_{i in G kept} n_i.
6. Global update: U = sum_G N_G U_G / sum_G N_G.

With equal scores and eta = 1 this is FedAvg's weighted mean of the kept uploads. Scores: c_i;
weights: n_i (eta / s_i) / sum_kept n_j; ``info``: each group's threshold ``threshold:g<k>`` and
each participant's group ``group:<id>`` (groups numbered 0.. in label order).
The other readings measured beside it (``credit_groups_robust``, ``credit_groups_direction``) change
six switches: ``centre`` and ``threshold`` ("group" or "round"), ``denominator`` ("group" or "kept"),
``cap_step``, ``score``: "distance" (above), "direction" (the same over unit vectors,
||x_i / ||x_i|| - m / ||m|| ||, blind to length, sees a flipped sign) or "both" (the larger of the
two, each over its own typical value), and ``min_cosine``: also exclude i when cos(x_i, m) is below it.
"""

from __future__ import annotations

import numpy as np
import torch

from cotrain.aggregation.base import Aggregator, Combined, RoundContext, register_aggregator
from cotrain.aggregation.rules._common import (bool_option, choice_option, float_option, int_option,
                                               mad_threshold, median_rows, require)
from cotrain.seeding import numpy_rng


def draw_groups(ids: list[str], *, group_size: int, seed: int, round: int) -> dict[str, int]:
    """participant -> group for one round: max(2, floor(n / group_size)) near-equal groups of a
    permutation drawn from (seed, "credit_groups", round); one group when n < 2. A server that wants
    the groups before the uploads arrive (to put them in ``Upload.group``) calls this."""
    n = len(ids)
    count = 1 if n < 2 else max(2, n // group_size)
    order = numpy_rng(seed, "credit_groups", round).permutation(n)
    return {ids[int(i)]: g for g, part in enumerate(np.array_split(order, count)) for i in part}


def _median(values: torch.Tensor) -> float:
    return float(median_rows(values.reshape(-1, 1))[0])


@register_aggregator("credit_groups")
class CreditGroups(Aggregator):
    """The patent's method (literal preset); see the module docstring for the maths.

    Args:
        group_size: the target clients per group (>= 1); the round has max(2, n // group_size) groups.
        k: the normalisation factor k > 0 of s_i; None uses the number of clients the sum of s_i runs
            over (the client's group, or its kept clients with ``denominator = "kept"``), so s_i = 1
            when their scores are equal.
        eta: the preset learning rate eta > 0 of the target update (1 keeps a client's own step).
        kappa: the threshold's MADs above the median (>= 0).
        min_score: the floor of c_i (> 0), so that eta / s_i stays finite.
        influence: lambda_i, "uniform" (1) or "examples" (n_i).
        centre: the robust centre of the score: the group's median ("group") or the round's ("round").
        threshold: T from the group's scores ("group") or from all the round's scores ("round").
        denominator: s_i sums over the whole group ("group") or over its kept clients ("kept").
        cap_step: cap eta / s_i at eta (damp risky clients, never amplify the others).
        score: "distance" to the centre, "direction" (distance of the unit vectors) or "both" (the
            larger of the two scaled scores).
        min_cosine: also exclude a client whose cosine to the centre is below this (None: no such
            rule); never applied in a round where it would exclude every client.
    """

    def __init__(self, *, group_size: int = 5, k: float | None = None, eta: float = 1.0, kappa: float = 3.0,
                 min_score: float = 0.1, influence: str = "uniform", centre: str = "group",
                 threshold: str = "group", denominator: str = "group", cap_step: bool = False,
                 score: str = "distance", min_cosine: float | None = None) -> None:
        rule = type(self).name or "credit_groups"
        self.group_size = int_option(rule, "group_size", group_size, minimum=1)
        self.k = None if k is None else float_option(rule, "k", k, low=0.0, low_open=True)
        self.eta = float_option(rule, "eta", eta, low=0.0, low_open=True)
        self.kappa = float_option(rule, "kappa", kappa, low=0.0)
        self.min_score = float_option(rule, "min_score", min_score, low=0.0, low_open=True)
        self.influence = choice_option(rule, "influence", influence, ("uniform", "examples"))
        self.centre = choice_option(rule, "centre", centre, ("group", "round"))
        self.threshold = choice_option(rule, "threshold", threshold, ("group", "round"))
        self.denominator = choice_option(rule, "denominator", denominator, ("group", "kept"))
        self.cap_step = bool_option(rule, "cap_step", cap_step)
        self.score = choice_option(rule, "score", score, ("distance", "direction", "both"))
        self.min_cosine = None if min_cosine is None else float_option(rule, "min_cosine", min_cosine,
                                                                       low=-1.0, high=1.0)

    def groups(self, ids: list[str], context: RoundContext) -> list[list[int]]:
        """Row indices per group: the server's ``Upload.group`` if it set them all, else drawn."""
        if context.groups:
            missing = [pid for pid in ids if pid not in context.groups]
            require(not missing, f"{self.name}: the server grouped some uploads but not {missing}")
            assignment = dict(context.groups)
        else:
            assignment = draw_groups(ids, group_size=self.group_size, seed=context.seed, round=context.round)
        labels = sorted(set(assignment[pid] for pid in ids))
        return [[i for i, pid in enumerate(ids) if assignment[pid] == g] for g in labels]

    def centres(self, updates: torch.Tensor, groups: list[list[int]]) -> list[torch.Tensor]:
        """The robust centre m of each group's scores: the round's coordinate-wise median for every
        group (``centre = "round"``) or each group's own; computed once a round, shared below."""
        if self.centre == "round":
            return [median_rows(updates)] * len(groups)
        return [median_rows(updates[g]) for g in groups]

    def scores(self, updates: torch.Tensor, groups: list[list[int]],
               centres: list[torch.Tensor] | None = None) -> torch.Tensor:
        """c_i: the distance to the robust centre over a typical distance, floored at ``min_score``;
        with ``score = "direction"`` the same over unit vectors, with "both" the larger of the two."""
        centres = self.centres(updates, groups) if centres is None else centres
        if self.score == "distance":
            return self._scaled_distance(updates, groups, centres)
        direction = self._scaled_distance(_unit(updates), groups, [_unit(m[None])[0] for m in centres])
        if self.score == "direction":
            return direction
        return torch.maximum(self._scaled_distance(updates, groups, centres), direction)

    def cosines(self, updates: torch.Tensor, groups: list[list[int]],
                centres: list[torch.Tensor] | None = None) -> torch.Tensor:
        """cos(x_i, m) with m the robust centre of i's group; 0 for a zero row or centre."""
        centres = self.centres(updates, groups) if centres is None else centres
        cos = torch.zeros(updates.shape[0], dtype=torch.float64)
        for g, m in zip(groups, centres):
            cos[g] = (_unit(updates[g]) @ _unit(m[None])[0]).to(torch.float64)
        return cos

    def _scaled_distance(self, rows: torch.Tensor, groups: list[list[int]],
                         centres: list[torch.Tensor]) -> torch.Tensor:
        distance = torch.empty(rows.shape[0], dtype=torch.float64)
        scale = torch.empty_like(distance)
        for g, m in zip(groups, centres):
            distance[g] = torch.linalg.vector_norm(rows[g] - m, dim=1)
            scale[g] = _typical(distance[g])
        if self.centre == "round":
            scale[:] = _typical(distance)
        return (distance / scale).clamp_min(self.min_score)

    def combine(self, updates: torch.Tensor, weights: torch.Tensor, ids: list[str],
                context: RoundContext) -> Combined:
        groups = self.groups(ids, context)
        centres = self.centres(updates, groups)
        c = self.scores(updates, groups, centres)
        lam = weights if self.influence == "examples" else torch.ones_like(weights)
        kept = torch.ones(len(ids), dtype=torch.bool)
        info: dict[str, float] = {"groups": float(len(groups))}
        round_threshold = mad_threshold(c, self.kappa)
        for label, g in enumerate(groups):
            t = round_threshold if self.threshold == "round" else mad_threshold(c[g], self.kappa)
            info[f"threshold:g{label}"] = t
            info.update({f"group:{ids[i]}": float(label) for i in g})
            kept[g] = c[g] <= t
        if self.min_cosine is not None:
            agree = self.cosines(updates, groups, centres) >= self.min_cosine
            if bool((kept & agree).any()):
                kept &= agree
        step = torch.zeros_like(c)
        for g in groups:
            members = [i for i in g if kept[i]] if self.denominator == "kept" else g
            if not members:
                continue
            k = self.k if self.k is not None else float(len(members))
            s = k * lam[g] * c[g] / float((lam[members] * c[members]).sum())
            step[g] = self.eta / s
        if self.cap_step:
            step = step.clamp_max(self.eta)
        # 5. one update per group from its kept clients, 6. the example-weighted mean of the groups
        group_updates, group_mass = [], []
        for g in groups:
            members = [i for i in g if kept[i]]
            if members:
                mass = weights[members].sum()
                group_updates.append((weights[members] * step[members]) @ updates[members] / mass)
                group_mass.append(mass)
        mass = torch.stack(group_mass)
        vector = (mass @ torch.stack(group_updates)) / mass.sum()
        total = float(mass.sum())
        return Combined(vector,
                        weights={pid: float(weights[i] * step[i]) / total for i, pid in enumerate(ids) if kept[i]},
                        scores={pid: float(c[i]) for i, pid in enumerate(ids)},
                        excluded=[pid for i, pid in enumerate(ids) if not kept[i]], info=info)


def _typical(distance: torch.Tensor) -> float:
    """The median distance; the mean when more than half sit on the centre; 1 when all do."""
    med = _median(distance)
    if med > 0:
        return med
    mean = float(distance.mean())
    return mean if mean > 0 else 1.0


def _unit(rows: torch.Tensor) -> torch.Tensor:
    """Each row over its norm; a zero row stays zero (it has no direction to compare)."""
    norm = torch.linalg.vector_norm(rows, dim=1, keepdim=True)
    return rows / torch.where(norm > 0, norm, torch.ones_like(norm))
