"""The plug-in surface's contracts: aggregators in every protocol, registries, fresh-participant runtimes."""

import pytest
import torch

from _transfer_fixtures import make_disc, make_model, make_sources, make_target_x, same, snapshot, tiny_settings
from cotrain.aggregation import (AGGREGATORS, Aggregator, Combined, Upload, build_aggregator, register_aggregator,
                                 weighted_mean)
from cotrain.experiment import config_from_dict, run_experiment
from cotrain.federated import FedAvgParticipant, FedAvgSettings, run_fedavg
from cotrain.models import build_model
from cotrain.runtime import InProcessGrid
from cotrain.runtime.grid import Grid
from cotrain.runtime.ledger import Ledger
from cotrain.transfer.nodes import TargetParticipant
from cotrain.transfer.parties import build_federation


class _OldPath(Aggregator):
    """The aggregation before the aggregation package: ``weighted_mean`` of the raw uploads."""

    on_updates = False

    def aggregate(self, uploads, context):  # type: ignore[override]
        from cotrain.aggregation import Aggregate

        return Aggregate(weighted_mean([u.tensors for u in uploads], [u.weight for u in uploads]))

    def combine(self, *a):  # pragma: no cover - aggregate is overridden
        raise AssertionError


def _participants(ds, n=3):
    factory = lambda: build_model("mlp", input_shape=(1, 8, 8), num_classes=3, hidden=[16], seed=11)  # noqa: E731
    parts = [ds.subset(range(i, len(ds), n)) for i in range(n)]
    return {f"p{i}": FedAvgParticipant(f"p{i}", model_factory=factory, train_data=parts[i], seed=4)
            for i in range(n)}


def test_fedavg_rule_equals_the_old_weighted_mean_bit_for_bit(tiny_dataset):
    # Prepare: unequal shares, so the weights matter; 3 rounds.
    settings = FedAvgSettings(rounds=3, local_steps=3, batch_size=8, lr=0.1, momentum=0.5)
    ds = tiny_dataset.subset(range(170))
    runs = {}
    for name, agg in (("rule", build_aggregator("fedavg")), ("old", _OldPath())):
        model = build_model("mlp", input_shape=(1, 8, 8), num_classes=3, hidden=[16], seed=11)
        # Execute
        history = run_fedavg(InProcessGrid(_participants(ds)), model, settings, seed=4, aggregator=agg)
        runs[name] = (model.state_dict(), history)
    # Assert: bit for bit, and the rule's record of effective weights is n_k / n
    for k, v in runs["old"][0].items():
        assert torch.equal(runs["rule"][0][k], v), k
    weights = runs["rule"][1][0].aggregation["weights"]
    assert weights == pytest.approx({"p0": 57 / 170, "p1": 57 / 170, "p2": 56 / 170})


def test_fada_with_a_robust_rule_keeps_target_weight():
    # Prepare: aggregator topology, so the target's own G arrives as a reply the test can read.
    class Recording(InProcessGrid):
        def _deliver(self, messages, *, round):
            out = super()._deliver(messages, round=round)
            self.last = out
            return out

    model, disc = make_model(), make_disc()
    sources = make_sources(("s1", "s2"))
    fed = build_federation(model, disc, sources, make_target_x(), topology="aggregator", seed=0)
    fed.grid = Recording(fed.grid._participants)
    settings = tiny_settings()
    w = settings.target_weight
    # Execute
    result = fed.run(model, disc, settings, aggregator=build_aggregator("median"))
    # Assert: G = (1 - w) * median(G_s) + w * G_target, G_target being the target's last reply
    from cotrain.transfer.nodes import unpack

    last = fed.grid.last
    g_sources = [unpack(last[s].tensors, "G") for s in ("s1", "s2")]
    median = build_aggregator("median")([Upload(s, g) for s, g in zip(("s1", "s2"), g_sources)]).tensors
    g_target = unpack(last["target"].tensors, "G")
    want = weighted_mean([median, g_target], [1 - w, w])
    got = result.model.blocks.state_dict()
    assert 0 < w < 1 and all(torch.equal(got[k], want[k]) for k in want)
    # and the mix is not the median of the two (what the old code did with aggregator = "median")
    assert not all(torch.equal(got[k], torch.minimum(median[k], g_target[k])) for k in want)


class FreshEachMessage(Grid):
    """A grid that builds each participant anew for every message and carries only
    ``get_state()`` between messages, as Flower's deployment engine does."""

    def __init__(self, build):
        self.ledger, self._build, self._states = Ledger(), build, {}
        self._ids = sorted(build)

    def participant_ids(self):
        return list(self._ids)

    def _deliver(self, messages, *, round):
        out = {}
        for pid, m in messages.items():
            p = self._build[pid]()
            if pid in self._states:
                p.set_state(self._states[pid])
            out[pid] = p.handle(m.detached()).detached()
            self._states[pid] = p.get_state()
        return out


def test_fada_nodes_rebuilt_for_every_message_give_the_in_process_run():
    """Every bit of a node's state (models, optimiser moments of phases not run since) is in its state."""
    import copy

    from cotrain.transfer import SourceNode, TargetNode

    sources, target_x = make_sources(("s1", "s2")), make_target_x()
    settings = tiny_settings(rounds=3)
    model, disc = make_model(), make_disc()
    in_process = build_federation(model, disc, sources, target_x, topology="aggregator", seed=0).run(
        model, disc, settings)
    m0, d0 = make_model(), make_disc()
    build = {s: (lambda s=s: SourceNode(s, model=copy.deepcopy(m0), discriminator=copy.deepcopy(d0),
                                        data=sources[s], seed=0)) for s in sources}
    build["target"] = lambda: TargetParticipant(TargetNode(target_x, model=copy.deepcopy(m0),
                                                           discriminator=copy.deepcopy(d0), seed=0))
    from cotrain.transfer import run_fada

    fresh = run_fada(FreshEachMessage(build), m0, d0, settings)
    assert same(snapshot(fresh.model), snapshot(in_process.model))
    assert same(snapshot(fresh.discriminator), snapshot(in_process.discriminator))


@register_aggregator("toy_first")
class _FirstUpload(Aggregator):
    """A toy rule (one class, no other file touched): keep the first upload's update, scaled."""

    def __init__(self, *, scale: float = 1.0) -> None:
        if scale <= 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.scale = scale

    def combine(self, updates, weights, ids, context):
        return Combined(updates[0] * self.scale, scores={p: float(i) for i, p in enumerate(ids)},
                        excluded=ids[1:])


def test_a_new_rule_is_one_class_and_reaches_the_config_and_the_round_record(tmp_path):
    try:
        cfg = config_from_dict({
            "run": {"name": "toy", "output_dir": str(tmp_path), "seed": 1},
            "data": {"participants": 3, "max_train_samples": 120, "max_test_samples": 60,
                     "options": {"size": 16, "num_classes": 3, "n_train": 120, "n_test": 60}},
            "model": {"name": "mlp", "options": {"hidden": [8]}},
            "fedavg": {"rounds": 2, "local_steps": 1, "batch_size": 8},
            "aggregation": {"name": "toy_first", "options": {"scale": 0.5}},
        })
        result = run_experiment(cfg)
        record = result.history[0]["aggregation"]
        assert record["excluded"] == ["participant-001", "participant-002"]
        assert record["scores"] == {"participant-000": 0.0, "participant-001": 1.0, "participant-002": 2.0}
        assert result.summary["aggregator"] == "toy_first"
        with pytest.raises(ValueError, match="aggregation.options: scale must be > 0"):
            config_from_dict({"aggregation": {"name": "toy_first", "options": {"scale": -1.0}}})
    finally:
        AGGREGATORS.remove("toy_first")


@pytest.mark.parametrize("sections, key", [
    ({"aggregation": {"name": "dp_fedavg"}}, "aggregation.options: aggregator 'dp_fedavg': missing required option"),
    ({"method": {"name": "fada"}, "aggregation": {"name": "dp_fedavg",
                                                   "options": {"clip_norm": 1.0, "noise_multiplier": 1.0}}},
     "aggregation.name: 'dp_fedavg' works with the fedavg, split method(s), not 'fada'"),
    ({"method": {"name": "split"}, "defence": {"name": "dp_client",
                                                "options": {"clip_norm": 1.0, "noise_multiplier": 1.0}}},
     "defence.name: 'dp_client' works with the fedavg method(s), not 'split'"),
])
def test_privacy_options_are_stated_and_used_only_where_they_act(sections, key):
    from cotrain.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        config_from_dict(sections)
    assert str(err.value).startswith(key), str(err.value)


def test_summary_reports_epsilon_per_releasing_party(tmp_path):
    # Prepare: client-side DP-FedAvg, every participant every round, 2 rounds
    from cotrain.privacy import PrivacySpend, epsilon_of

    cfg = config_from_dict({
        "run": {"name": "dp", "output_dir": str(tmp_path), "seed": 1},
        "data": {"participants": 2, "max_train_samples": 80, "max_test_samples": 40,
                 "options": {"size": 16, "num_classes": 3, "n_train": 80, "n_test": 40}},
        "model": {"name": "mlp", "options": {"hidden": [8]}},
        "fedavg": {"rounds": 2, "local_steps": 1, "batch_size": 8},
        "defence": {"name": "dp_client", "options": {"clip_norm": 1.0, "noise_multiplier": 2.0}},
        "privacy": {"delta": 1e-5},
    })
    # Execute
    result = run_experiment(cfg)
    # Assert: two Gaussian releases of noise multiplier 2 each, composed by the accountant
    want = epsilon_of([PrivacySpend(r, "x", "gaussian", 2.0, 1.0) for r in (1, 2)], delta=1e-5)
    assert result.summary["epsilon_by_party"] == pytest.approx({"participant-000": want, "participant-001": want})
    assert result.summary["privacy_releases"] == 4 and result.summary["delta"] == 1e-5
    assert "Privacy" in (result.run_dir / "report.html").read_text()


def test_fltrust_gets_the_servers_root_upload_and_scores_on_the_rest(tmp_path):
    cfg = config_from_dict({
        "run": {"name": "fltrust", "output_dir": str(tmp_path), "seed": 2},
        "data": {"participants": 3, "max_train_samples": 120, "max_test_samples": 90,
                 "options": {"size": 16, "num_classes": 3, "n_train": 120, "n_test": 90}},
        "model": {"name": "mlp", "options": {"hidden": [8]}},
        "fedavg": {"rounds": 2, "local_steps": 2, "batch_size": 8},
        "aggregation": {"name": "fltrust", "root_samples": 30},
    })
    result = run_experiment(cfg)
    assert result.summary["test_samples"] == 60  # the 30 root samples are never scored on
    trust = result.history[0]["aggregation"]["scores"]
    assert set(trust) == {"participant-000", "participant-001", "participant-002"}
    assert all(0.0 <= t <= 1.0 for t in trust.values()) and max(trust.values()) > 0  # ReLU'd cosines
    # nothing of the root set crossed: the ledger holds the 3 participants' messages only
    assert {e.receiver for e in result.ledger.entries if e.direction == "down"} == set(trust)


def test_bad_uploads_are_rejected_with_a_reason_and_the_round_goes_on(tiny_dataset):
    # Prepare: p1 sends NaN, p2 claims 10**12 examples, p3 pads its metrics with 100 kB, p0 is honest.
    from cotrain.federated.records import TrainResult
    from cotrain.runtime.grid import Participant, handler
    from cotrain.runtime.message import Message

    class Corrupt(Participant):
        def __init__(self, pid, inner, how):
            super().__init__(pid)
            self.inner, self.how = inner, how

        @handler("train")
        def train(self, m):
            r = TrainResult.from_message(self.inner.handle(m))
            if self.how == "nan":
                r.tensors = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                             for k, v in r.tensors.items()}
            elif self.how == "values":
                r.metrics = {f"m{i}": float(i) for i in range(8000)}
            else:
                r.num_examples = 10**12
            return r.to_message()

    parts = _participants(tiny_dataset, n=4)
    grid = InProcessGrid({"p0": parts["p0"], "p1": Corrupt("p1", parts["p1"], "nan"),
                          "p2": Corrupt("p2", parts["p2"], "count"), "p3": Corrupt("p3", parts["p3"], "values")})
    model = build_model("mlp", input_shape=(1, 8, 8), num_classes=3, hidden=[16], seed=11)
    # Execute
    history = run_fedavg(grid, model, FedAvgSettings(rounds=2, local_steps=2, batch_size=8, max_examples=1000),
                         seed=4)
    # Assert: the two are rejected every round with their reason; the model stays finite; the ledger has it
    assert set(history[0].rejected) == {"p1", "p2", "p3"}
    assert "NaN" in history[0].rejected["p1"] and "exceeds the cap 1000" in history[0].rejected["p2"]
    assert "more than the 65,536 an upload may" in history[0].rejected["p3"]
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert [(r["round"], r["participant"]) for r in grid.ledger.rejections] == [
        (1, "p1"), (1, "p2"), (1, "p3"), (2, "p1"), (2, "p2"), (2, "p3")]
    assert history[1].aggregation["weights"] == {"p0": 1.0}


def test_a_participant_that_raises_drops_out_and_the_quorum_is_enforced(tiny_dataset):
    # Prepare: p2's handler raises in round 2 only
    from cotrain.federated.records import TrainInstruction
    from cotrain.federated.server import QuorumError
    from cotrain.runtime.grid import ParticipantFailedError

    parts = _participants(tiny_dataset)
    original = parts["p2"].handle

    def flaky(m):
        if m.values.get("round") == 2:
            raise RuntimeError("disk full")
        return original(m)

    parts["p2"].handle = flaky
    model = build_model("mlp", input_shape=(1, 8, 8), num_classes=3, hidden=[16], seed=11)
    grid = InProcessGrid(parts)
    # Execute
    history = run_fedavg(grid, model, FedAvgSettings(rounds=3, local_steps=1, batch_size=8), seed=4)
    # Assert: round 2 went on without p2, said why, and the ledger holds the failure
    assert [h.failed for h in history] == [{}, {"p2": "RuntimeError: disk full"}, {}]
    assert set(history[1].aggregation["weights"]) == {"p0", "p1"}
    assert grid.ledger.failures == [{"round": 2, "participant": "p2", "reason": "RuntimeError: disk full"}]
    # with a quorum of 3 the same run stops in round 2, naming who failed
    with pytest.raises(QuorumError, match=r"round 2: 2 usable upload\(s\) of 3 .* min_participants = 3 .*p2: "
                                          r"RuntimeError: disk full"):
        run_fedavg(InProcessGrid(parts), model, FedAvgSettings(rounds=3, local_steps=1, batch_size=8,
                                                               min_participants=3), seed=4)
    # protocols that cannot go on without a reply get a one-line error, not a KeyError later
    with pytest.raises(ParticipantFailedError, match="round 2: p2 failed: RuntimeError: disk full"):
        instruction = TrainInstruction(parameters=model.state_dict(), round=2, local_steps=1, batch_size=8, lr=0.1)
        InProcessGrid(parts).send_and_receive({"p2": instruction.to_message()}, round=2)
