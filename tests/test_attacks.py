"""Reply-time attacks on the update: each does what its docstring says, deterministically."""

import pytest
import torch

from _attack_fixtures import context, participant, train_request, update, wrapped
from cotrain.behaviours import ATTACKS, build_attack
from cotrain.errors import ConfigError, OptionsError
from cotrain.federated import model_state
from cotrain.federated.records import EVALUATE
from cotrain.runtime.message import Message, PayloadKind

F32 = dict(atol=1e-6, rtol=1e-5)  # parameters travel as float32: a round trip rounds once


def _honest(data, request):
    return participant(data).handle(request)


@pytest.mark.parametrize("scale", [1.0, 2.5])
def test_sign_flip_sends_minus_scale_times_the_honest_update(tiny_dataset, scale):
    # Prepare
    request = train_request()
    honest = update(_honest(tiny_dataset, request), request)
    # Execute
    sent = update(wrapped(build_attack("sign_flip", scale=scale), tiny_dataset).handle(request), request)
    # Assert
    assert honest.abs().max() > 1e-3
    torch.testing.assert_close(sent, -scale * honest, **F32)


def test_sign_flip_on_a_gradient_upload_is_minus_the_gradient(tiny_dataset):
    # Prepare
    request = train_request(upload="gradient")
    honest = update(_honest(tiny_dataset, request), None)
    # Execute
    reply = wrapped(build_attack("sign_flip"), tiny_dataset).handle(request)
    # Assert: the payload stays a gradient, negated
    assert reply.payload == PayloadKind.GRADIENTS
    torch.testing.assert_close(update(reply, None), -honest, **F32)


def test_scaling_sends_boost_times_the_update_and_keeps_integer_buffers(tiny_dataset):
    # Prepare: a model with BatchNorm (an int64 batch counter)
    request = train_request(norm="batch")
    honest_reply = participant(tiny_dataset, norm="batch").handle(request)
    # Execute
    reply = wrapped(build_attack("scaling", boost=4.0), tiny_dataset, norm="batch").handle(request)
    # Assert
    torch.testing.assert_close(update(reply, request), 4.0 * update(honest_reply, request), **F32)
    ints = [k for k, v in reply.tensors.items() if not v.is_floating_point()]
    assert ints and all(torch.equal(reply.tensors[k], honest_reply.tensors[k]) for k in ints)


def test_gaussian_replace_is_noise_of_sigma_and_add_is_update_plus_the_same_noise(tiny_dataset):
    # Prepare
    request = train_request()
    honest = update(_honest(tiny_dataset, request), request)
    # Execute
    replaced = update(wrapped(build_attack("gaussian", sigma=0.5), tiny_dataset).handle(request), request)
    added = update(wrapped(build_attack("gaussian", sigma=0.5, mode="add"), tiny_dataset).handle(request), request)
    # Assert: ~1,100 coordinates, so the sample std is within 10 % of sigma; one noise stream
    assert abs(float(replaced.std()) - 0.5) < 0.05 and abs(float(replaced.mean())) < 0.05
    torch.testing.assert_close(added - honest, replaced, **F32)


def test_gaussian_rejects_an_unknown_mode():
    with pytest.raises(OptionsError, match="replace, add"):
        build_attack("gaussian", mode="uniform")


def test_split_end_reply_is_attacked_against_the_begin_parameters():
    # Prepare: SplitFed's begin carries the side's weights, end's reply the trained ones
    attack = build_attack("sign_flip")
    ctx = context()
    # (the protocol's own kinds: a renamed kind must not turn the attack into a silent no-op)
    from cotrain.split.messages import BEGIN, END

    begin = Message(BEGIN, tensors={"w": torch.tensor([1.0, 2.0])}, payload=PayloadKind.PARAMETERS,
                    values={"epoch": 1})
    end_reply = Message(END, tensors={"w": torch.tensor([2.0, 5.0])}, payload=PayloadKind.PARAMETERS,
                        values={"num_examples": 4})
    # Execute
    attack.on_reply(Message(BEGIN, values={"num_batches": 1}), begin, ctx)
    flipped = attack.on_reply(end_reply, Message(END), ctx)
    # Assert: 1 - (2 - 1) = 0, 2 - (5 - 2) = -1
    assert flipped.tensors["w"].tolist() == [0.0, -1.0] and flipped.values == {"num_examples": 4}
    with pytest.raises(ConfigError, match="starting point"):
        build_attack("sign_flip").on_reply(end_reply, Message(END), ctx)


def test_the_attacked_kinds_are_the_protocols_own():
    from cotrain.behaviours.attacks import _updates
    from cotrain.federated.records import TRAIN
    from cotrain.split.messages import END

    from cotrain.behaviours.defences import dp_fedavg

    assert (_updates.TRAIN, _updates.END, dp_fedavg.TRAIN) == (TRAIN, END, TRAIN)


REPLY_ATTACKS = {"sign_flip": {}, "scaling": {}, "gaussian": {}, "alie": {"honest_samples": 3},
                 "ipm": {"honest_samples": 3}, "min_max": {"honest_samples": 3}, "adaptive": {"honest_samples": 3},
                 "backdoor": {"boost": 3.0}, "label_flip": {}}


def test_every_registered_attack_is_covered_here():
    assert sorted(ATTACKS.names()) == sorted(REPLY_ATTACKS)


@pytest.mark.parametrize("name", sorted(REPLY_ATTACKS))
def test_an_evaluate_message_passes_through_unchanged(tiny_dataset, name):
    # Prepare
    message = Message(EVALUATE, tensors=model_state(participant(tiny_dataset).model), payload=PayloadKind.PARAMETERS)
    attack = build_attack(name, **REPLY_ATTACKS[name])
    # Execute
    reply = wrapped(attack, tiny_dataset).handle(message)
    # Assert: same metrics as an honest participant (label_flip / backdoor change the data, not the reply)
    plain = wrapped(build_attack(name, **REPLY_ATTACKS[name]), tiny_dataset).inner.handle(message)
    assert reply.values == plain.values and reply.tensors == {}


@pytest.mark.parametrize("name", sorted(REPLY_ATTACKS))
def test_attacks_are_deterministic_given_the_seed(tiny_dataset, name):
    # Prepare
    request = train_request(round=2)
    # Execute: two independent builds
    a, b = (wrapped(build_attack(name, **REPLY_ATTACKS[name]), tiny_dataset).handle(request) for _ in range(2))
    # Assert
    assert a.tensors.keys() == b.tensors.keys()
    assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)


def test_a_sign_flipping_agent_changes_a_splitfed_run(tmp_path):
    # Prepare: SplitFed v2 on synthetic data, once honest, once with a third of the agents flipping
    from cotrain.experiment import config_from_dict, run_experiment

    def run(attack):
        cfg = {"run": {"name": "sfl", "seed": 0, "output_dir": str(tmp_path), "save_model": False, "threads": 1},
               "data": {"dataset": "synthetic", "participants": 3, "max_train_samples": 192, "max_test_samples": 64},
               "model": {"name": "small_cnn", "options": {"width": 4}},
               "method": {"name": "split"},
               "split": {"variant": "sflv2", "cut": "conv1", "epochs": 1, "batch_size": 32, "lr": 0.05},
               **({"attack": {"name": attack, "fraction": 0.34}} if attack else {})}
        result = run_experiment(config_from_dict(cfg))
        return result.summary.get("malicious", []), result.history[-1]["test_loss"]
    # Execute
    _, honest = run(None)
    malicious, flipped = run("sign_flip")
    # Assert: one agent is malicious and the model it poisoned differs (an attack that is a no-op fails here:
    # the same seed gives the same run bit for bit)
    assert len(malicious) == 1
    assert flipped != honest


@pytest.mark.parametrize("name", ["alie", "ipm", "min_max", "adaptive"])
def test_an_estimating_attack_on_split_is_a_one_line_config_error(name):
    from cotrain.experiment import config_from_dict

    with pytest.raises(ConfigError, match=f"attack.name: '{name}' works with the fedavg method"):
        config_from_dict({"data": {"dataset": "synthetic"}, "method": {"name": "split"},
                          "attack": {"name": name, "fraction": 0.3}})
