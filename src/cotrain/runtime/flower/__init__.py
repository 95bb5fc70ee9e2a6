"""The Flower runtime: cotrain server and participant code as a Flower ServerApp and ClientApps.

``launch`` runs a job (:mod:`cotrain.runtime.job`) on Flower's simulation or deployment engine and returns what
the in-process run returns; ``records`` converts messages; ``grid`` is the server-side grid.
Importing this package imports Flower (``pip install cotrain[flower]``).
"""

from cotrain.runtime.flower.grid import FlowerMessageGrid, FlowerRuntimeError
from cotrain.runtime.flower.launch import (FlowerLaunchError, FlowerTimeoutError, Limits, run_flower_deployment,
                                           run_flower_simulation, run_inprocess)
from cotrain.runtime.flower.records import message_to_record_dict, record_dict_to_message
from cotrain.runtime.flower.security import Security, SecurityFileError, TlsFiles

__all__ = [
    "FlowerMessageGrid", "FlowerRuntimeError", "FlowerLaunchError", "FlowerTimeoutError", "Limits", "Security",
    "SecurityFileError", "TlsFiles", "run_flower_deployment",
    "run_flower_simulation", "run_inprocess", "message_to_record_dict", "record_dict_to_message",
]
