"""Library errors: every error cotrain raises on purpose derives from :class:`CotrainError`.

The CLI prints a ``CotrainError`` as one line (exit code 2) and lets anything else, a programming
error, raise with its traceback.
"""

from __future__ import annotations


class CotrainError(Exception):
    """Base of the errors cotrain raises on purpose; ``str(err)`` is the message for the user."""


class ConfigError(CotrainError, ValueError):
    """An experiment file (or a config built in code) is wrong. ``str(err)`` is one line.

    Attributes:
        key: dotted path of the offending key (``"fedavg.lr"``), or ``""`` for the file as a whole.
    """

    def __init__(self, message: str, *, key: str = "") -> None:
        super().__init__(" ".join(str(message).split()))
        self.key = key


class UnknownNameError(CotrainError, ValueError):
    """A name that no registry entry has (``unknown aggregator 'medain'; known: fedavg, median``)."""


class OptionsError(CotrainError, ValueError):
    """Options that a registered entry does not accept (unknown key, or a keyword it lacks)."""


class RunFailedError(CotrainError, RuntimeError):
    """A run that was started failed outside the user's input (a runtime's processes died, timed out).

    ``resumable``: the cause may pass (participants come back), so the run's checkpoint is worth
    resuming; the runner then says how.
    """

    resumable: bool = False
