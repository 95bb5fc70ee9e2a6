"""Split learning between a computing centre and agents, and federated split learning (SplitFed)."""

from cotrain.split.agent import SplitAgent, agent_batch_stream, epoch_batches
from cotrain.split.centre import CentreSide
from cotrain.split.cost import CommunicationModel, communication_model, method_bytes
from cotrain.split.messages import VARIANTS, SplitSettings
from cotrain.split.parts import cut_shapes, cut_values, side_state, split_model, state_bytes
from cotrain.split.protocols import EpochRecord, run_split

__all__ = [
    "SplitAgent", "agent_batch_stream", "epoch_batches", "CentreSide", "CommunicationModel",
    "communication_model", "method_bytes", "VARIANTS", "SplitSettings", "cut_shapes", "cut_values",
    "side_state", "split_model", "state_bytes", "EpochRecord", "run_split",
]
