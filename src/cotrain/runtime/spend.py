"""One noised release, as the ledger records it: who released what, with which noise.

The ledger stores the mechanism's parameters, never a hand-computed epsilon: (epsilon, delta) is
computed from a party's spends by the accountant (:mod:`cotrain.privacy.accountant`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

MECHANISMS = ("gaussian", "laplace")


@dataclass(frozen=True)
class PrivacySpend:
    """A noised release.

    Attributes:
        round: the round it belongs to.
        party: who released it (the party whose data it protects).
        mechanism: ``"gaussian"`` or ``"laplace"``.
        noise_multiplier: noise standard deviation (Gaussian) or scale b (Laplace) divided by the
            sensitivity.
        sensitivity: the L2 (Gaussian) or L1 (Laplace) sensitivity the caller stated.
        sampling_rate: probability that this party's data took part (Poisson subsampling; 1: always).
        count: how many identical releases this entry stands for (composed by the accountant).
        release: what was released (``"update"``, ``"coverage_scores"``, ...).
    """

    round: int
    party: str
    mechanism: str
    noise_multiplier: float
    sensitivity: float
    sampling_rate: float = 1.0
    count: int = 1
    release: str = ""

    def __post_init__(self) -> None:
        if self.mechanism not in MECHANISMS:
            raise ValueError(f"privacy spend: mechanism must be one of {MECHANISMS}, got {self.mechanism!r}")
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier > 0):
            raise ValueError(f"privacy spend: noise_multiplier must be a finite number > 0, got {self.noise_multiplier}")
        if not (math.isfinite(self.sensitivity) and self.sensitivity > 0):
            raise ValueError(f"privacy spend: sensitivity must be a finite number > 0, got {self.sensitivity}")
        if not 0 < self.sampling_rate <= 1:
            raise ValueError(f"privacy spend: sampling_rate must be in (0, 1], got {self.sampling_rate}")
        if not (isinstance(self.count, int) and self.count >= 1):
            raise ValueError(f"privacy spend: count must be an integer >= 1, got {self.count!r}")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "PrivacySpend":
        return cls(**d)
