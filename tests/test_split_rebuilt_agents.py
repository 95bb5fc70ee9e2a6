"""A split agent rebuilt for every message (as Flower's ClientApp does) trains exactly as a kept one.

Between FORWARD and BACKWARD a rebuilt agent has lost the autograd graph of its front pass; it
recomputes it from the state it kept (weights, batch, dropout seed) and restores its batch-norm
statistics, so the whole run must be bit-for-bit the run with agents kept alive.
"""

import pytest
import torch

from cotrain.models import build_model
from cotrain.runtime import InProcessGrid
from cotrain.runtime.grid import Participant
from cotrain.runtime.message import Message
from cotrain.split import SplitAgent, SplitSettings, run_split

SEED = 5


class RebuiltEveryMessage(Participant):
    """Builds a fresh agent for each message from the state the last one left (cloned, as it
    crosses a process boundary on Flower), like the Flower client does."""

    def __init__(self, participant_id: str, build) -> None:
        super().__init__(participant_id)
        self.build = build
        self.state: dict[str, torch.Tensor] = {}
        self.builds = 0

    def handle(self, message: Message) -> Message:
        agent = self.build()
        self.builds += 1
        agent.set_state({k: v.clone() for k, v in self.state.items()})
        reply = agent.handle(message)
        self.state = {k: v.clone() for k, v in agent.get_state().items()}
        return reply


def _factory(norm: str):
    return lambda: build_model("small_cnn", input_shape=(1, 8, 8), num_classes=3, width=4, norm=norm, seed=11)


def _agent(pid, data, norm, cut):
    return SplitAgent(pid, model_factory=_factory(norm), train_data=data, seed=SEED, **cut)


def _run(tiny_dataset, settings, norm, cut, rebuilt: bool):
    shards = {f"a{k}": tiny_dataset.subset(list(range(k, 120, 3))) for k in range(3)}
    if rebuilt:
        parties = {pid: RebuiltEveryMessage(pid, lambda pid=pid, d=d: _agent(pid, d, norm, cut))
                   for pid, d in shards.items()}
    else:
        parties = {pid: _agent(pid, d, norm, cut) for pid, d in shards.items()}
    grid = InProcessGrid(parties)
    grid.catch_failures = False
    model = _factory(norm)()
    history = run_split(grid, model, settings, seed=SEED)
    return model, history, grid, parties


@pytest.mark.parametrize("variant,norm,cut", [
    ("sflv1", "batch", {"cut": "conv1"}),
    ("sflv2", "none", {"cut": "conv2"}),
    ("sequential", "batch", {"cut": "conv2"}),
    ("sflv1", "none", {"cut": "conv1", "tail_cut": "conv3"}),
])
def test_rebuilt_agents_equal_kept_agents_bit_for_bit(tiny_dataset, variant, norm, cut):
    # Prepare: momentum, so the optimiser's moments must travel too
    settings = SplitSettings(variant=variant, epochs=2, batch_size=16, lr=0.1, momentum=0.9,
                             cut=cut["cut"], tail_cut=cut.get("tail_cut"))

    # Execute
    kept, kept_history, kept_grid, _ = _run(tiny_dataset, settings, norm, cut, rebuilt=False)
    rebuilt, history, grid, parties = _run(tiny_dataset, settings, norm, cut, rebuilt=True)

    # Assert: same model, buffers included; same ledger; the agents really were rebuilt
    for (name, a), b in zip(kept.state_dict().items(), rebuilt.state_dict().values()):
        assert torch.equal(a, b), name
    assert [r.train_loss for r in kept_history] == [r.train_loss for r in history]
    assert grid.ledger.total_bytes() == kept_grid.ledger.total_bytes()
    assert all(p.builds > 10 for p in parties.values())
    assert not torch.equal(next(rebuilt.parameters()), next(_factory(norm)().parameters()))


def test_mid_epoch_state_is_dropped_at_end(tiny_dataset):
    # Prepare
    agent = _agent("a0", tiny_dataset.subset(list(range(40))), "none", {"cut": "conv1"})
    grid = InProcessGrid({"a0": agent})

    # Execute
    run_split(grid, _factory("none")(), SplitSettings(cut="conv1", epochs=1, batch_size=16, lr=0.1), seed=SEED)

    # Assert: after END only the sent indices remain (what a checkpoint keeps between epochs)
    assert set(agent.get_state()) == {"sent_indices", "sent_lengths"}
    assert len(agent.get_state()["sent_indices"]) == 40
