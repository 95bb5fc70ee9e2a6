"""``credit_groups_robust``: the patent's method with four readings changed (docs/robust.md, and
the tests in tests/test_aggregation_credit_groups.py that show where the literal reading fails).

Same steps as :mod:`cotrain.aggregation.rules.credit_groups`; the defaults differ:

- ``centre = "round"``: the score is the distance to the coordinate-wise median of all the round's
  uploads, scaled by the round's median distance. A group of 5 drawn from 20 clients with 6
  colluders has a colluding majority now and then; its own median is then theirs and the literal
  score flags the honest members instead.
- ``threshold = "round"``: T = median(c) + kappa * 1.4826 * MAD(c) over all n scores, applied in
  every group (a MAD of 5 scores is too noisy a scale).
- ``denominator = "kept"``: s_i = k lambda_i c_i / sum_{j in G(i), kept} lambda_j c_j, so an excluded
  outlier no longer inflates the sum and, through eta / s_i, every honest step of its group.
- ``cap_step = True``: the step multiplier is min(eta, eta / s_i): a client riskier than its group's
  average is damped, a safer one is not amplified (the literal reading amplifies the client closest
  to the centre, which is where ALIE-style attackers sit).

With equal scores s_i = 1, so the rule still equals FedAvg's weighted mean when eta = 1.
"""

from __future__ import annotations

from cotrain.aggregation.base import register_aggregator
from cotrain.aggregation.rules.credit_groups import CreditGroups


@register_aggregator("credit_groups_robust")
class CreditGroupsRobust(CreditGroups):
    """The patent's method with a round-wide centre and threshold, kept-only sums and capped steps.

    Options as :class:`~cotrain.aggregation.rules.credit_groups.CreditGroups`; only the defaults differ.
    """

    def __init__(self, *, group_size: int = 5, k: float | None = None, eta: float = 1.0, kappa: float = 3.0,
                 min_score: float = 0.1, influence: str = "uniform", centre: str = "round",
                 threshold: str = "round", denominator: str = "kept", cap_step: bool = True,
                 score: str = "distance", min_cosine: float | None = None) -> None:
        super().__init__(group_size=group_size, k=k, eta=eta, kappa=kappa, min_score=min_score,
                         influence=influence, centre=centre, threshold=threshold, denominator=denominator,
                         cap_step=cap_step, score=score, min_cosine=min_cosine)
