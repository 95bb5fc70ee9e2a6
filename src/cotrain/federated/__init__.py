"""Federated averaging: participants, server rounds, aggregation rules."""

from cotrain.federated.participant import FedAvgParticipant
from cotrain.federated.records import TrainInstruction, TrainResult, load_model_state, model_state
from cotrain.federated.server import FedAvgSettings, RoundRecord, run_fedavg, sample_participants
from cotrain.federated.training import OptimizerSettings, batch_order, evaluate, train_steps

__all__ = [
    "FedAvgParticipant", "TrainInstruction",
    "TrainResult", "load_model_state", "model_state", "FedAvgSettings", "RoundRecord", "run_fedavg",
    "sample_participants", "OptimizerSettings", "batch_order", "evaluate", "train_steps",
]
