"""The parallel runtime: the same run as in process, bit for bit, and bounded memory for large federations."""

import math
import weakref

import numpy as np
import pytest
import torch
from _transfer_fixtures import fada_experiment_config

from cotrain.experiment import ConfigError, config_from_dict, run_experiment
from cotrain.runtime import Message, Participant, handler
from cotrain.runtime.parallel import ParallelGrid, balance

TIMINGS = {"seconds"}


def _tiny(tmp_path, name, runtime, **sections):
    data = {
        "run": {"name": name, "output_dir": str(tmp_path), "seed": 3, "runtime": runtime, "threads": 1,
                **({"workers": 2} if runtime == "parallel" else {})},
        "data": {"participants": 5, "options": {"n_train": 100, "n_test": 40, "num_domains": 1}},
        "model": {"name": "small_cnn", "options": {"width": 4}},
        "fedavg": {"rounds": 3, "local_steps": 2, "batch_size": 8, "participants_per_round": 3, "momentum": 0.5},
    }
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    return config_from_dict(data)


def _same_runs(a, b):
    """Identical history (timings aside), ledger and final model, bit for bit."""
    strip = lambda h: [{k: v for k, v in r.items() if k not in TIMINGS} for r in h]  # noqa: E731
    assert strip(a.history) == strip(b.history)
    assert a.ledger.entries == b.ledger.entries and len(a.ledger.entries) > 0
    sa, sb = torch.load(a.folder.model), torch.load(b.folder.model)
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_fedavg_on_two_workers_equals_in_process_bit_for_bit(tmp_path):
    # Prepare: 5 participants, 3 per round, so participants move between rounds and workers
    inprocess = run_experiment(_tiny(tmp_path, "seq", "inprocess"))
    # Execute
    parallel = run_experiment(_tiny(tmp_path, "par", "parallel"))
    # Assert
    _same_runs(inprocess, parallel)
    assert parallel.summary["runtime"] == "parallel"
    assert not math.isnan(parallel.history[-1]["test_accuracy"])


def test_fedsgd_with_the_gradient_audit_on_two_workers_equals_in_process(tmp_path):
    # the audit scores against each participant's last batch, read from the state the grid keeps
    audit = {"fedavg": {"upload": "gradient", "rounds": 2}, "audit": {"enabled": True, "steps": 5, "aux_samples": 20}}
    inprocess = run_experiment(_tiny(tmp_path, "seq", "inprocess", **audit))
    parallel = run_experiment(_tiny(tmp_path, "par", "parallel", **audit))
    _same_runs(inprocess, parallel)
    key = "audit_success_rate_embedding"  # scored against the participant's true batch
    assert key in parallel.summary and parallel.summary[key] == inprocess.summary[key]


def _fada(tmp_path, name, runtime):
    return fada_experiment_config(tmp_path, run={"name": name, "runtime": runtime, "threads": 1,
                                                 **({"workers": 2} if runtime == "parallel" else {})},
                                  topology="aggregator")


def test_fada_on_two_workers_equals_in_process_bit_for_bit(tmp_path):
    inprocess = run_experiment(_fada(tmp_path, "seq", "inprocess"))
    parallel = run_experiment(_fada(tmp_path, "par", "parallel"))
    _same_runs(inprocess, parallel)


def test_a_method_that_cannot_run_in_parallel_says_so_in_one_line(tmp_path):
    cfg = config_from_dict({"run": {"name": "s", "output_dir": str(tmp_path), "runtime": "parallel"},
                            "method": {"name": "split"}})
    with pytest.raises(ConfigError, match=r"^run.runtime: the split method runs on inprocess, flower-simulation, flower-deployment, not 'parallel'"):
        run_experiment(cfg)


def test_balance_puts_the_largest_work_first_on_the_least_loaded_worker():
    # 5, 4, 3, 3, 2 onto 2 workers: 5 -> w0; 4 -> w1; 3 -> w1 (4 < 5); 3 -> w0 (5 < 7); 2 -> w0 or w1 (8 = 7? no: w1 7)
    shares = balance({"a": 5, "b": 4, "c": 3, "d": 3, "e": 2}, 2, previous={})
    assert shares == [["a", "d"], ["b", "c", "e"]]
    # ties go to the worker a participant had last
    assert balance({"x": 1, "y": 1}, 2, previous={"x": 1, "y": 0}) == [["y"], ["x"]]


_ALIVE: "weakref.WeakSet[Counting]" = weakref.WeakSet()


class Counting(Participant):
    """Counts its rounds in its state, and reports how many participants are alive in its process."""

    def __init__(self, pid: str) -> None:
        super().__init__(pid)
        self.rounds = 0
        _ALIVE.add(self)

    @handler("train")
    def train(self, message: Message) -> Message:
        self.rounds += 1
        return Message("train", values={"alive": len(_ALIVE), "rounds": self.rounds})

    def get_state(self):
        return {"rounds": torch.tensor(self.rounds)}

    def set_state(self, state):
        self.rounds = int(state["rounds"])


def counting(index: int) -> Counting:
    return Counting(f"p{index:04d}")


def test_a_thousand_participants_keep_only_a_rounds_worth_alive():
    # Prepare: 1000 participants, 10 a round; participant 0 takes part in every round
    ids = [f"p{i:04d}" for i in range(1000)]
    rounds = [ids[0:10], ids[0:1] + ids[500:509], ids[0:1] + ids[990:999]]
    with ParallelGrid(counting, ids, workers=2, threads=1) as grid:
        # Execute
        replies = [grid.send_and_receive({pid: Message("train") for pid in chosen}, round=r)
                   for r, chosen in enumerate(rounds, 1)]
    # Assert: never more than a round's participants alive in a worker, and the state carried over
    assert max(m.values["alive"] for round_replies in replies for m in round_replies.values()) <= 10
    assert [r["p0000"].values["rounds"] for r in replies] == [1, 2, 3]
    assert {m.values["rounds"] for m in replies[2].values()} == {1, 3}
    assert len(grid.ledger.entries) == 2 * 30 and len(grid._states) == 28


class Failing(Participant):
    @handler("train")
    def train(self, message: Message) -> Message:
        raise RuntimeError(f"{self.participant_id} broke")


def failing(index: int) -> Participant:
    return Failing(f"f{index}") if index else Counting("f0")


def test_a_participants_failure_is_recorded_and_the_others_reply():
    with ParallelGrid(failing, ["f0", "f1"], workers=2) as grid:
        replies = grid.send_and_receive({"f0": Message("train"), "f1": Message("train")}, round=1,
                                        allow_failures=True)
    assert list(replies) == ["f0"] and grid.failures == {"f1": "RuntimeError: f1 broke"}


def test_a_federation_larger_than_its_data_set_partitions_samples_drawn_with_replacement():
    from cotrain.experiment.setup import load_experiment_data

    cfg = config_from_dict({"data": {"participants": 50, "samples_with_replacement": 1000,
                                     "options": {"n_train": 100, "n_test": 20, "num_domains": 1}}})
    data = load_experiment_data(cfg)
    # 1000 draws cut into 50 iid parts of 20, indexing the 100 samples, which are not copied 10 times
    assert [len(p) for p in data.parts] == [20] * 50 and len(data.splits.train) == 100
    drawn = torch.as_tensor(np.concatenate(data.parts))
    assert drawn.max() < 100 and len(drawn.unique()) <= 100 < len(drawn) == 1000
