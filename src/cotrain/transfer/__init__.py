"""Federated adversarial domain adaptation (the federated transfer learning patent; ADDA-style).

Source nodes with labelled data, a target node with unlabelled data, optionally an aggregator;
only parameters of G (feature extractor), T (task model) and D (domain discriminator) cross.
"""

from cotrain.transfer import encoders as _encoders  # noqa: F401  (registers "adda_lenet")
from cotrain.transfer.discriminator import DomainDiscriminator, build_discriminator, feature_dim
from cotrain.transfer.losses import (SOURCE_LABEL, TARGET_LABEL, adversarial_task_loss, confusion_loss,
                                     discriminator_loss, domain_bce)
from cotrain.transfer.nodes import LocalPhase, SourceNode, TargetNode, TargetParticipant, frozen
from cotrain.transfer.protocol import FadaResult, FadaRound, FadaSettings, run_fada

__all__ = [
    "DomainDiscriminator", "build_discriminator", "feature_dim", "SOURCE_LABEL", "TARGET_LABEL",
    "adversarial_task_loss", "confusion_loss", "discriminator_loss", "domain_bce", "LocalPhase", "SourceNode",
    "TargetNode", "TargetParticipant", "frozen", "FadaResult", "FadaRound", "FadaSettings", "run_fada",
]
