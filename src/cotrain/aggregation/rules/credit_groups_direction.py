"""``credit_groups_direction``: ``credit_groups_robust`` with a score and a gate that see direction.

A distance score ||x_i - m|| / D cannot tell a sign-flipped update from an honest one of the same
length in a non-IID round: -x_i is about as far from the round's median m as a dissimilar honest
x_i is. Over unit vectors the two separate: an honest client's distance is sqrt(2 - 2 cos(x_i, m)),
a flipped one's sqrt(2 + 2 cos(x_i, m)). Over unit vectors a scaled update looks honest, so the score
is the larger of the two, each over its own typical (median) value across the round:

    c_i = max(||x_i - m|| / D,  ||x_i / ||x_i|| - m / ||m|| || / D_u)

and every other step is ``credit_groups_robust``'s (round centre and threshold, kept-only sums,
capped steps). A kappa-MAD threshold on that score was not enough on MNIST at 30 % sign flippers
(docs/robust.md): early in training honest updates are nearly orthogonal (mean pairwise cosine about
0.03), so the flipped ones sit inside the honest spread. So a client whose update points away from
the round's median (cos(x_i, m) < ``min_cosine`` = 0) is excluded too; the gate is skipped in a round
where it would exclude everyone. With equal scores (and no negative cosine) s_i = 1, so it equals
FedAvg's weighted mean when eta = 1.
"""

from __future__ import annotations

from cotrain.aggregation.base import register_aggregator
from cotrain.aggregation.rules.credit_groups_robust import CreditGroupsRobust


@register_aggregator("credit_groups_direction")
class CreditGroupsDirection(CreditGroupsRobust):
    """``credit_groups_robust`` scoring by the larger of the distance and the direction score, and
    excluding updates against the round's median.

    Options as :class:`~cotrain.aggregation.rules.credit_groups.CreditGroups`; ``score`` and ``min_cosine``
    differ from ``credit_groups_robust``'s defaults.
    """

    def __init__(self, *, group_size: int = 5, k: float | None = None, eta: float = 1.0, kappa: float = 3.0,
                 min_score: float = 0.1, influence: str = "uniform", centre: str = "round",
                 threshold: str = "round", denominator: str = "kept", cap_step: bool = True,
                 score: str = "both", min_cosine: float | None = 0.0) -> None:
        super().__init__(group_size=group_size, k=k, eta=eta, kappa=kappa, min_score=min_score,
                         influence=influence, centre=centre, threshold=threshold, denominator=denominator,
                         cap_step=cap_step, score=score, min_cosine=min_cosine)
