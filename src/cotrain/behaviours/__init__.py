"""Attacks and defences as participant wrappers (data-time and reply-time hooks)."""

from cotrain.behaviours.base import (ATTACKS, DEFENCES, BehavingParticipant, Behaviour, BehaviourContext,
                                     BehaviourSpec, behave, build_attack, build_defence, choose_malicious,
                                     register_attack, register_defence)

__all__ = [
    "ATTACKS", "DEFENCES", "BehavingParticipant", "Behaviour", "BehaviourContext", "BehaviourSpec", "behave",
    "build_attack", "build_defence", "choose_malicious", "register_attack", "register_defence",
]
