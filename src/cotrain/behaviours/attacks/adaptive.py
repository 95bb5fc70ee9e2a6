"""An adaptive attacker against a distance-to-centre threshold: it lands just inside it.

Threat model. The attacker knows the aggregation rule's score and threshold: each upload is
scored by its distance to a robust centre of the uploads, d_i = ||u_i - c||, and uploads with
d_i > T are excluded, where either T is a known constant (``threshold``: a clipping radius, a
norm bound) or T = median(d) + kappa * s * MAD(d) over the scores (a median-plus-MAD rule, with
the rule's kappa and MAD scale s). It does *not* see the other participants' updates: it
estimates c and the benign scores from ``honest_samples`` simulated honest updates of its own
(see ``_updates``), with c the coordinate-wise median (``centre = "median"``) or mean of them.

Attack (in the spirit of the "adaptive" attacks of Fang et al., "Local model poisoning attacks to
Byzantine-robust federated learning", USENIX Security 2020, and of the threshold-aware attacks of
Shejwalkar and Houmansadr, NDSS 2021): go from the estimated centre along a malicious unit
direction v as far as the threshold allows, less a margin,

    u' = c + r v,    r = T (1 - margin),

with v = -c / ||c|| (``"reverse"``: against the benign descent direction), -sigma / ||sigma||
(``"std"``), -sign(c) / sqrt(d) (``"sign"``), or ``"orthogonal"``: -sigma with its component along c
removed, normalised, against a rule that also excludes uploads pointing away from the centre
(``min_cosine``): then cos(u', c) = ||c|| / sqrt(||c||^2 + r^2) > 0 and the gate lets it through.
So d' = r < T on the attacker's own estimate; on the server, c is the centre of everyone's uploads, which may differ from the attacker's.
"""

from __future__ import annotations

import torch

from cotrain.behaviours.attacks._updates import BenignEstimateAttack, UpdateView, check_positive
from cotrain.behaviours.base import BehaviourContext, register_attack
from cotrain.errors import OptionsError
from cotrain.runtime.message import Message

CENTRES = ("median", "mean")
DIRECTIONS = ("reverse", "std", "sign", "orthogonal")


def centre_of(benign: torch.Tensor, centre: str) -> torch.Tensor:
    """c (d,): coordinate-wise median (the lower middle for an even count, as torch) or mean."""
    return benign.median(0).values if centre == "median" else benign.mean(0)


def mad_threshold(scores: torch.Tensor, *, kappa: float, mad_scale: float) -> float:
    """median(d) + kappa * mad_scale * median(|d - median(d)|)."""
    med = scores.median()
    return float(med + kappa * mad_scale * (scores - med).abs().median())


def unit_direction(benign: torch.Tensor, c: torch.Tensor, direction: str) -> torch.Tensor:
    if direction == "reverse":
        v = -c
    elif direction == "sign":
        v = -torch.sign(c)
    else:
        v = -benign.std(0, unbiased=True)
        if direction == "orthogonal":  # drop the part along c, so the upload's cosine to c stays positive
            along = c / c.norm().clamp_min(1e-30)
            v = v - (v @ along) * along
    return v / v.norm().clamp_min(1e-30)


@register_attack("adaptive")
class AdaptiveThreshold(BenignEstimateAttack):
    """``u' = c + T (1 - margin) v``: as malicious as the estimated threshold lets it be.

    Args:
        threshold: T when the rule's threshold is a known distance; None: the median-plus-MAD estimate.
        kappa, mad_scale: the rule's kappa and MAD scale (used when ``threshold`` is None).
        margin: in [0, 1), how far inside the threshold to land.
        centre: ``"median"`` or ``"mean"``, the rule's centre.
        direction: ``"reverse"``, ``"std"``, ``"sign"`` or ``"orthogonal"`` (-sigma, perpendicular to c).
        honest_samples: m, simulated honest updates behind the estimates (the real one and m - 1).
    """

    def __init__(self, *, threshold: float | None = None, kappa: float = 3.0, mad_scale: float = 1.4826,
                 margin: float = 0.1, centre: str = "median", direction: str = "reverse",
                 honest_samples: int = 4) -> None:
        super().__init__(honest_samples=honest_samples)
        if centre not in CENTRES:
            raise OptionsError(f"adaptive centre must be one of {', '.join(CENTRES)}, got {centre!r}")
        if direction not in DIRECTIONS:
            raise OptionsError(f"adaptive direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
        if not 0 <= float(margin) < 1:
            raise OptionsError(f"adaptive margin must be in [0, 1), got {margin}")
        self.threshold = None if threshold is None else check_positive("threshold", threshold)
        self.kappa, self.mad_scale, self.margin = float(kappa), float(mad_scale), float(margin)
        self.centre, self.direction = centre, direction
        self.last_radius = float("nan")

    def estimated_threshold(self, benign: torch.Tensor, c: torch.Tensor) -> float:
        if self.threshold is not None:
            return self.threshold
        return mad_threshold((benign - c).norm(dim=1), kappa=self.kappa, mad_scale=self.mad_scale)

    def poison(self, view: UpdateView, request: Message, context: BehaviourContext) -> torch.Tensor:
        benign = self.honest_updates(view, request)
        c = centre_of(benign, self.centre)
        self.last_radius = self.estimated_threshold(benign, c) * (1 - self.margin)
        return c + self.last_radius * unit_direction(benign, c, self.direction)
