"""SIGINT / SIGTERM during a resumable run: finish the current round, checkpoint, then stop.

The first signal only asks (``checkpoint.stop_requested``); the round loop's hook raises
:class:`~cotrain.experiment.checkpoint.RunInterrupted` once the round's checkpoint is written. A
second SIGINT stops at once (``KeyboardInterrupt``), leaving the checkpoint of the last round.
Handlers are installed only in the main thread (Python allows no other) and restored on exit.
"""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager
from types import FrameType
from typing import Iterator

from cotrain.experiment.checkpoint import RunCheckpoint

log = logging.getLogger(__name__)
SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def stop_after_round_on_signals(checkpoint: RunCheckpoint) -> Iterator[None]:
    """While inside, SIGINT and SIGTERM set ``checkpoint.stop_requested`` instead of killing the run."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def ask(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if checkpoint.stop_requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # asked twice: stop now
        checkpoint.stop_requested = name
        log.info("%s: stopping after the current round (SIGINT again stops at once)", name)

    previous = {s: signal.signal(s, ask) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
