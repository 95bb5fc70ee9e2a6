"""Parties, messages and the ledger."""

from cotrain.runtime.grid import Grid, Participant, handler
from cotrain.runtime.inprocess import InProcessGrid
from cotrain.runtime.ledger import SERVER, Ledger, LedgerEntry, PrivacySpend
from cotrain.runtime.message import Message, PayloadKind

__all__ = [
    "Grid", "Participant", "handler", "InProcessGrid", "SERVER", "Ledger", "LedgerEntry",
    "PrivacySpend", "Message", "PayloadKind",
]
