"""DP-FedAvg: the client-side defence ``dp_client`` and the server-side aggregator ``dp_fedavg``."""

import math

import pytest
import torch

from cotrain.aggregation import Upload, build_aggregator, weighted_mean
from cotrain.behaviours import BehaviourContext, BehavingParticipant, build_defence
from cotrain.errors import CotrainError
from cotrain.privacy import PrivacySpend, epsilon_by_party, epsilon_of
from cotrain.runtime import InProcessGrid, Message, Participant, PayloadKind, handler

DELTA = 1e-5


class Toy(Participant):
    """Answers a FedAvg train request with request + a fixed step (or the step itself as a gradient)."""

    def __init__(self, pid, step):
        super().__init__(pid)
        self.step = step

    @handler("train")
    def train(self, message):
        gradient = message.values.get("upload") == "gradient"
        tensors = {"w": self.step["w"].clone() if gradient else message.tensors["w"] + self.step["w"],
                   "b": self.step["b"].clone() if gradient else message.tensors["b"] + self.step["b"],
                   "steps": message.tensors["steps"] + 1}
        return Message("train", tensors=tensors, payload=PayloadKind.PARAMETERS,
                       values={"upload": "gradient" if gradient else "parameters", "num_examples": 10,
                               "batch_size": 4, "train_loss": 0.5, "metrics": {"acc": 0.9}})


def _request(rnd=1, upload="parameters"):
    return Message("train", tensors={"w": torch.tensor([[1.0, -2.0], [0.5, 0.25]]), "b": torch.tensor([0.1, 0.2]),
                                     "steps": torch.tensor(7)},
                   values={"round": rnd, "upload": upload}, payload=PayloadKind.PARAMETERS)


def _step(scale=1.0):
    # joint norm of the step: sqrt(9 + 16 + 0 + 0 + 0 + 0) = 5, times scale
    return {"w": torch.tensor([[3.0, 4.0], [0.0, 0.0]]) * scale, "b": torch.zeros(2)}


def _wrapped(pid, step, **options):
    return BehavingParticipant(Toy(pid, step), [build_defence("dp_client", **options)], BehaviourContext(pid, seed=3))


def _update_norm(reply, request):
    return math.sqrt(sum(float((reply.tensors[n] - request.tensors[n]).double().pow(2).sum()) for n in ("w", "b")))


# -- client side -------------------------------------------------------------------------------
def test_dp_client_with_no_noise_and_no_clip_is_the_identity_bit_for_bit():
    # Prepare
    plain = InProcessGrid({"p0": Toy("p0", _step(0.37))})
    wrapped = InProcessGrid({"p0": _wrapped("p0", _step(0.37), clip_norm=None, noise_multiplier=0.0)})
    # Execute
    a = plain.send_and_receive({"p0": _request()}, round=1)["p0"]
    b = wrapped.send_and_receive({"p0": _request()}, round=1)["p0"]
    # Assert: same tensors (bits and dtypes), same values, no spend
    assert list(a.tensors) == list(b.tensors)
    assert all(torch.equal(a.tensors[n], b.tensors[n]) and a.tensors[n].dtype == b.tensors[n].dtype for n in a.tensors)
    assert a.values == b.values and b.spends == () and wrapped.ledger.privacy == []


def test_dp_client_clipping_bounds_the_update_and_keeps_its_direction():
    # Prepare: an update of norm 50, bound 2, no noise
    request = _request()
    participant = _wrapped("p0", _step(10.0), clip_norm=2.0, noise_multiplier=0.0)
    # Execute
    reply = participant.handle(request)
    # Assert: ||update|| = 2 = C, update = step * 2/50; the integer tensor untouched; clip-only makes no claim
    assert _update_norm(reply, request) == pytest.approx(2.0, rel=1e-6)
    assert torch.allclose(reply.tensors["w"] - request.tensors["w"], torch.tensor([[1.2, 1.6], [0.0, 0.0]]))
    assert reply.tensors["steps"].item() == 8 and reply.tensors["steps"].dtype == torch.int64
    assert reply.spends == () and reply.values["train_loss"] == 0.5


def test_dp_client_noises_a_gradient_upload_itself():
    # Prepare: gradient (3, 4, 0, ...) of norm 5, bound 1, noise sigma = 0.5 -> std 0.5 per coordinate
    request = _request(rnd=2, upload="gradient")
    participant = _wrapped("p1", _step(), clip_norm=1.0, noise_multiplier=0.5)
    # Execute
    reply = participant.handle(request)
    again = _wrapped("p1", _step(), clip_norm=1.0, noise_multiplier=0.5).handle(request)
    # Assert: noise around the clipped gradient (not around request + gradient); seeded; one spend
    noise = reply.tensors["w"] - torch.tensor([[0.6, 0.8], [0.0, 0.0]])
    assert float(noise.abs().max()) < 4 * 0.5 and float(noise.abs().max()) > 0
    assert torch.equal(reply.tensors["w"], again.tensors["w"])
    assert reply.spends == (PrivacySpend(round=2, party="p1", mechanism="gaussian", noise_multiplier=0.5,
                                         sensitivity=1.0, release="gradient"),)


def test_dp_client_spends_land_on_the_ledger_and_epsilon_by_party_reads_them():
    # Prepare: two participants with dp_client (C = 1, sigma = 1.1), three rounds
    grid = InProcessGrid({pid: _wrapped(pid, _step(k + 1.0), clip_norm=1.0, noise_multiplier=1.1)
                          for k, pid in enumerate(("p0", "p1"))})
    # Execute
    replies = [grid.send_and_receive({"p0": _request(r), "p1": _request(r)}, round=r) for r in (1, 2, 3)]
    eps = epsilon_by_party(grid.ledger, delta=DELTA)
    # Assert: one spend per upload, party = sender; each party's epsilon is that of 3 Gaussian releases
    assert [(s.party, s.round) for s in grid.ledger.privacy] == [("p0", 1), ("p1", 1), ("p0", 2), ("p1", 2),
                                                                ("p0", 3), ("p1", 3)]
    expected = epsilon_of([PrivacySpend(1, "x", "gaussian", 1.1, 1.0, count=3)], delta=DELTA)
    assert eps == {"p0": expected, "p1": expected}
    assert 0 < expected < math.inf
    # unnoised, data-dependent values are withheld; noise differs between rounds (a stream per round)
    assert math.isnan(replies[0]["p0"].values["train_loss"]) and replies[0]["p0"].values["metrics"] == {}
    assert not torch.equal(replies[0]["p0"].tensors["w"], replies[1]["p0"].tensors["w"])


def test_dp_client_rejects_bad_options_in_one_line():
    for options, name in ((dict(clip_norm=None, noise_multiplier=1.0), "needs clip_norm"),
                          (dict(clip_norm=-1.0, noise_multiplier=1.0), "clip_norm"),
                          (dict(clip_norm=1.0, noise_multiplier=-0.1), "noise_multiplier"),
                          (dict(clip_norm=1.0, noise_multiplier=1.0, sampling_rate=0.0), "sampling_rate"),
                          (dict(clip_norm=1.0, noise_multiplier=1.0, sampling_rate=0.5), "must be 1")):
        with pytest.raises(CotrainError, match=name) as err:
            build_defence("dp_client", **options)
        assert "\n" not in str(err.value)


# -- server side -------------------------------------------------------------------------------
def test_dp_fedavg_without_noise_or_clipping_is_the_unweighted_mean():
    # Prepare: uploads 0, 3, 9 with example counts 1, 2, 3 (FedAvg would give 6.5)
    uploads = [Upload(pid, {"w": torch.tensor([v], dtype=torch.float64)}, weight=k + 1)
               for k, (pid, v) in enumerate((("a", 0.0), ("b", 3.0), ("c", 9.0)))]
    agg = build_aggregator("dp_fedavg", clip_norm=None, noise_multiplier=0.0)
    # Execute
    out = agg(uploads, round=1, reference={"w": torch.tensor([1.0], dtype=torch.float64)})
    # Assert
    assert out.tensors["w"].item() == pytest.approx(4.0, abs=1e-12)
    assert out.weights == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}) and out.spends == []


def test_dp_fedavg_without_noise_or_clipping_equals_the_mean_on_a_model_state():
    g = torch.Generator().manual_seed(0)
    states = [{"w": torch.randn(4, 3, generator=g), "n": torch.tensor(5)} for _ in range(4)]
    reference = {"w": torch.randn(4, 3, generator=g), "n": torch.tensor(5)}
    uploads = [Upload(f"p{k}", s, weight=k + 1) for k, s in enumerate(states)]
    out = build_aggregator("dp_fedavg", clip_norm=None, noise_multiplier=0.0)(uploads, reference=reference)
    mean = weighted_mean(states, [1.0] * 4)
    assert torch.allclose(out.tensors["w"], mean["w"], rtol=0, atol=1e-6)
    assert out.tensors["w"].dtype == torch.float32 and out.tensors["n"].item() == 5


def test_dp_fedavg_clips_each_update_before_averaging():
    # Prepare: updates (3, 4) (norm 5) and (0, 0.5) (norm 0.5) from reference (1, 1); bound 1
    reference = {"w": torch.tensor([1.0, 1.0], dtype=torch.float64)}
    uploads = [Upload("a", {"w": torch.tensor([4.0, 5.0], dtype=torch.float64)}),
               Upload("b", {"w": torch.tensor([1.0, 1.5], dtype=torch.float64)})]
    # Execute
    out = build_aggregator("dp_fedavg", clip_norm=1.0, noise_multiplier=0.0)(uploads, reference=reference)
    # Assert: ((0.6, 0.8) + (0, 0.5)) / 2 + (1, 1)
    assert torch.allclose(out.tensors["w"], torch.tensor([1.3, 1.65], dtype=torch.float64))


def test_dp_fedavg_noise_has_std_sigma_c_over_n_and_returns_its_spend():
    # Prepare: 4 identical zero updates of 40k coordinates, C = 2, sigma = 1.5 -> std 1.5 * 2 / 4 = 0.75
    zeros = {"w": torch.zeros(40_000, dtype=torch.float64)}
    uploads = [Upload(f"p{k}", zeros) for k in range(4)]
    agg = build_aggregator("dp_fedavg", clip_norm=2.0, noise_multiplier=1.5, sampling_rate=0.1)
    # Execute
    out = agg(uploads, round=3, reference=zeros, seed=11)
    again = agg(uploads, round=3, reference=zeros, seed=11)
    other = agg(uploads, round=3, reference=zeros, seed=12)
    # Assert
    assert float(out.tensors["w"].std()) == pytest.approx(0.75, rel=0.03)
    assert torch.equal(out.tensors["w"], again.tensors["w"]) and not torch.equal(out.tensors["w"], other.tensors["w"])
    assert out.spends == [PrivacySpend(round=3, party="server", mechanism="gaussian", noise_multiplier=1.5,
                                       sensitivity=0.5, sampling_rate=0.1, release="aggregate")]
    assert out.info == {"noise_std": 0.75} and out.scores == {}


def test_dp_fedavg_in_run_fedavg_records_a_server_spend_every_round(tiny_dataset):
    # Prepare: 4 participants, 2 a round (q = 0.5), 3 rounds, central noise
    from cotrain.federated import FedAvgParticipant, FedAvgSettings, run_fedavg
    from cotrain.models import build_model

    factory = lambda: build_model("mlp", input_shape=(1, 8, 8), num_classes=3, hidden=[8], seed=1)  # noqa: E731
    parts = {f"p{i}": FedAvgParticipant(f"p{i}", model_factory=factory, seed=2,
                                        train_data=tiny_dataset.subset(range(i, 80, 4))) for i in range(4)}
    grid = InProcessGrid(parts)
    settings = FedAvgSettings(rounds=3, participants_per_round=2, local_steps=2, batch_size=8, lr=0.1)
    agg = build_aggregator("dp_fedavg", clip_norm=0.5, noise_multiplier=1.0, sampling_rate=0.5)
    # Execute
    history = run_fedavg(grid, factory(), settings, seed=2, aggregator=agg)
    eps = epsilon_by_party(grid.ledger, delta=DELTA)
    # Assert: three server spends, accounted as 3 Poisson-sampled Gaussian releases
    assert [(s.party, s.round, s.sensitivity) for s in grid.ledger.privacy] == [("server", r, 0.25) for r in (1, 2, 3)]
    assert eps == {"server": epsilon_of([PrivacySpend(1, "s", "gaussian", 1.0, 1.0, 0.5, count=3)], delta=DELTA)}
    assert [h.aggregation["weights"] for h in history] == [{pid: 0.5 for pid in h.participants} for h in history]
    assert history[0].aggregation["info"] == {"noise_std": 0.25}


def _mlp():
    from cotrain.models import build_model

    return build_model("mlp", input_shape=(1, 8, 8), num_classes=3, hidden=[8], seed=1)


def _behaving_federation(data, defences, n=3, seed=5):
    """n FedAvg participants on interleaved shares of ``data``, each wrapped by ``defences``."""
    from cotrain.behaviours import BehaviourSpec, behave
    from cotrain.federated import FedAvgParticipant

    spec = BehaviourSpec(defences=tuple(defences))
    parts = {}
    for i in range(n):
        pid = f"p{i}"
        behaviours, ctx = spec.for_participant(pid, seed=seed, num_participants=n)
        parts[pid] = behave(lambda d, pid=pid: FedAvgParticipant(pid, model_factory=_mlp, train_data=d, seed=seed),
                            data.subset(range(i, 30 * n, n)), behaviours, ctx)
    return parts


def test_dp_client_on_fedavg_participants_gives_each_its_own_account(tiny_dataset):
    # Prepare: 3 FedAvg participants wrapped by dp_client, 2 sampled a round, 4 rounds
    from cotrain.federated import FedAvgSettings, run_fedavg

    parts = _behaving_federation(tiny_dataset, [("dp_client", {"clip_norm": 0.5, "noise_multiplier": 2.0})])
    grid = InProcessGrid(parts)
    settings = FedAvgSettings(rounds=4, participants_per_round=2, local_steps=2, batch_size=8, lr=0.1)
    # Execute
    history = run_fedavg(grid, _mlp(), settings, seed=5)
    eps = epsilon_by_party(grid.ledger, delta=DELTA)
    # Assert: a participant's epsilon is that of the rounds it took part in (sampling rate 1)
    taken = {pid: sum(pid in h.participants for h in history) for pid in parts}
    assert {s.party for s in grid.ledger.privacy} == {pid for pid, k in taken.items() if k}
    for pid, k in taken.items():
        if k:
            assert eps[pid] == epsilon_of([PrivacySpend(1, pid, "gaussian", 2.0, 0.5, count=k)], delta=DELTA)


def test_fedavg_with_a_no_op_dp_client_equals_fedavg_bit_for_bit(tiny_dataset):
    # Prepare: the same federation with and without dp_client(noise 0, no clip)
    from cotrain.federated import FedAvgSettings, run_fedavg

    settings = FedAvgSettings(rounds=2, participants_per_round=2, local_steps=2, batch_size=8, lr=0.1)
    states = {}
    for name, defences in (("plain", []), ("dp", [("dp_client", {"clip_norm": None, "noise_multiplier": 0.0})])):
        model, grid = _mlp(), InProcessGrid(_behaving_federation(tiny_dataset, defences))
        # Execute
        run_fedavg(grid, model, settings, seed=5)
        states[name] = (model.state_dict(), grid.ledger)
    # Assert
    assert all(torch.equal(states["plain"][0][k], v) for k, v in states["dp"][0].items())
    assert states["dp"][1].privacy == [] and epsilon_by_party(states["dp"][1], delta=DELTA) == {}


def test_epsilon_by_party_reads_a_ledger_written_to_jsonl(tmp_path):
    # Prepare: a ledger with a client's release (on its message) and a server's release
    from cotrain.runtime import Ledger

    ledger = Ledger()
    reply = Message("train", tensors={"w": torch.zeros(2)}, payload=PayloadKind.PARAMETERS,
                    spends=(PrivacySpend(1, "p0", "gaussian", 1.3, 0.5, release="update"),))
    ledger.record(reply, sender="p0", receiver="server", round=1)
    ledger.record_privacy(PrivacySpend(1, "server", "gaussian", 0.9, 0.1, sampling_rate=0.2, release="aggregate"))
    ledger.write_jsonl(tmp_path / "ledger.jsonl")
    # Execute
    eps = epsilon_by_party(Ledger.read_jsonl(tmp_path / "ledger.jsonl"), delta=DELTA, accountant="rdp")
    # Assert
    assert eps == {"p0": epsilon_of(ledger.spends_of("p0"), delta=DELTA, accountant="rdp"),
                   "server": epsilon_of(ledger.spends_of("server"), delta=DELTA, accountant="rdp")}
    assert list(eps) == ["p0", "server"] and eps["p0"] > 0 and eps["server"] > 0


def test_dp_options_in_an_experiment_file_are_checked_as_config_errors():
    from cotrain.experiment import ConfigError, parse_config

    for text, key in (('[defence]\nname = "dp_client"\noptions = { clip_norm = 1.0, noise_multiplier = 1.0, '
                       'sampling_rate = 0.5 }\n', "defence.options"),
                      ('[aggregation]\nname = "dp_fedavg"\noptions = { clip_norm = -1.0, noise_multiplier = 1.0 }\n',
                       "aggregation.options")):
        with pytest.raises(ConfigError) as err:
            parse_config(text)
        assert str(err.value).startswith(key) and "\n" not in str(err.value)


@pytest.mark.flower
@pytest.mark.slow
def test_both_placements_on_the_flower_simulation_engine_equal_the_in_process_run(tmp_path):
    # Prepare: FedAvg with dp_client and dp_fedavg together, 3 participants, 2 a round, 2 rounds
    pytest.importorskip("flwr")
    pytest.importorskip("ray")
    from cotrain.experiment.config import ExperimentConfig
    from cotrain.runtime.flower.launch import run_flower_simulation, run_inprocess
    from cotrain.runtime.job import load_job

    job = "cotrain.experiment.methods.fedavg:FLOWER_JOB"
    cfg = ExperimentConfig.model_validate({
        "run": {"seed": 7},
        "data": {"dataset": "synthetic", "participants": 3,
                 "options": {"n_train": 240, "n_test": 60, "size": 16, "num_classes": 4}},
        "model": {"name": "mlp", "options": {"hidden": [16]}},
        "fedavg": {"rounds": 2, "participants_per_round": 2, "local_steps": 2, "batch_size": 16, "lr": 0.2},
        "defence": {"name": "dp_client", "options": {"clip_norm": 1.0, "noise_multiplier": 0.5}},
        "aggregation": {"name": "dp_fedavg", "options": {"clip_norm": 2.0, "noise_multiplier": 0.3,
                                                         "sampling_rate": 2 / 3}},
    }).model_dump_json()
    # Execute
    _, ref_ledger, ref_state = run_inprocess(cfg, job=job)
    _, ledger, state = run_flower_simulation(cfg, job=job, num_participants=load_job(job).num_participants(cfg),
                                             workdir=tmp_path, timeout_s=400)
    # Assert: the same releases (the noise streams do not depend on the runtime), epsilons, model
    assert ledger.privacy == ref_ledger.privacy
    assert [s.party for s in ref_ledger.privacy].count("server") == 2
    assert epsilon_by_party(ledger, delta=DELTA) == epsilon_by_party(ref_ledger, delta=DELTA)
    assert all(torch.allclose(state[k], v, atol=1e-5) for k, v in ref_state.items())
