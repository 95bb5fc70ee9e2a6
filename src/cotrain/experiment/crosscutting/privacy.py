"""``[privacy]``: how the run's noised releases are accounted (delta, accountant).

The ledger holds every spend (mechanism parameters, never an epsilon); the summary's epsilon per
party comes from :func:`cotrain.privacy.epsilon_by_party` with these settings.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from cotrain.experiment.section import Section, register_section


@register_section("privacy")
class PrivacySection(Section):
    """``[privacy]``: ``delta`` of every reported (epsilon, delta), and the ``accountant`` (pld | rdp)."""

    delta: float = Field(1e-5, gt=0, lt=1)
    accountant: str = "pld"

    @field_validator("accountant")
    @classmethod
    def _known(cls, v: str) -> str:
        from cotrain.privacy import ACCOUNTANTS

        return ACCOUNTANTS.check_name(v)
