"""Experiment files: validation errors are one line naming the dotted key; round trips; overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from cotrain.experiment import (ConfigError, ExperimentConfig, config_to_toml, demo_config, load_config,
                                parse_config, parse_override, prepare, with_overrides)


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults_are_valid_and_round_trip_through_toml():
    cfg = ExperimentConfig()
    assert cfg.method.name == "fedavg" and cfg.data.dataset == "synthetic" and cfg.run.seed == 0
    text = config_to_toml(cfg, header="a header\nsecond line")
    assert text.startswith("# a header\n# second line\n")
    assert parse_config(text) == cfg
    demo = demo_config()
    assert parse_config(config_to_toml(demo)) == demo


def test_unknown_key_names_the_key_and_the_allowed_ones():
    message = error_of("[fedavg]\nlrr = 0.1\n")
    assert message.startswith("fedavg.lrr: unknown key")
    assert "lr" in message and "local_steps" in message


def test_unknown_section_lists_sections():
    message = error_of("[fedavgg]\nrounds = 1\n")
    assert message.startswith("fedavgg: unknown section") and "fedavg" in message and "data" in message


@pytest.mark.parametrize("text, key, expect", [
    ('[fedavg]\nrounds = "ten"\n', "fedavg.rounds", "integer"),
    ("[fedavg]\nrounds = true\n", "fedavg.rounds", "integer"),
    ("[fedavg]\nrounds = 2.5\n", "fedavg.rounds", "integer"),
    ('[fedavg]\nlr = "fast"\n', "fedavg.lr", "number"),
    ("[data]\nparticipants = [3]\n", "data.participants", "integer"),
    ("[data]\noptions = 3\n", "data.options", "table"),
    ("run = 1\n", "run", "table"),
])
def test_wrong_type_names_the_key(text, key, expect):
    message = error_of(text)
    assert message.startswith(f"{key}: ") and expect in message


@pytest.mark.parametrize("text, key, expect", [
    ("[fedavg]\nlr = -1\n", "fedavg.lr", "> 0"),
    ("[fedavg]\nrounds = 0\n", "fedavg.rounds", ">= 1"),
    ("[fedavg]\nfraction = 1.5\n", "fedavg.fraction", "<= 1"),
    ("[fedavg]\nmomentum = 1\n", "fedavg.momentum", "< 1"),
    ('[fedavg]\nupload = "weights"\n', "fedavg.upload", "'parameters'"),
    ('[run]\nruntime = "ray"\n', "run.runtime", "flower-simulation"),
    ('[run]\nname = "a/b"\n', "run.name", "folder name"),
    ("[run]\nseed = -1\n", "run.seed", ">= 0"),
    ("[data]\nparticipants = 2\n[fedavg]\nparticipants_per_round = 3\n", "fedavg.participants_per_round", "<= data"),
])
def test_out_of_range_value_names_the_key_and_the_rule(text, key, expect):
    message = error_of(text)
    assert message.startswith(f"{key}: ") and expect in message, message


@pytest.mark.parametrize("text, key, known", [
    ('[method]\nname = "fedprox"\n', "method.name", "fedavg"),
    ('[model]\nname = "vgg"\n', "model.name", "small_cnn"),
    ('[data]\ndataset = "imagenet"\n', "data.dataset", "synthetic"),
    ('[data]\npartition = "pathological"\n', "data.partition", "dirichlet"),
    ('[aggregation]\nname = "krum9"\n', "aggregation.name", "median"),
    ('[attack]\nname = "no-such-attack"\n', "attack.name", "known"),
])
def test_unknown_names_list_the_known_ones(text, key, known):
    message = error_of(text)
    assert message.startswith(f"{key}: unknown") and known in message, message


def test_aggregation_options_are_checked_against_the_rule():
    # Prepare: an option the fedavg rule does not take. Execute / Assert: the key and the accepted list.
    message = error_of('[aggregation]\nname = "fedavg"\noptions = { beta = 0.1 }\n')
    assert message.startswith("aggregation.options: aggregator 'fedavg': unknown option(s) beta"), message


def test_several_errors_stay_on_one_line_and_are_counted():
    message = error_of("[fedavg]\nlr = -1\nrounds = 0\n")
    assert "and 1 more" in message and "\n" not in message


def test_toml_syntax_error_names_the_file_and_line(tmp_path: Path):
    path = tmp_path / "bad.toml"
    path.write_text("[run]\nseed = 1\nname = \n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value) and "line 3" in str(info.value)


def test_missing_config_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")


def test_overrides_parse_toml_values_and_revalidate():
    assert parse_override("fedavg.rounds=3") == ("fedavg.rounds", 3)
    assert parse_override("data.dataset=mnist") == ("data.dataset", "mnist")
    assert parse_override('run.name="x"') == ("run.name", "x")
    assert parse_override("data.options={n_train=10}") == ("data.options", {"n_train": 10})
    cfg = with_overrides(ExperimentConfig(), {"fedavg.rounds": 3, "data.options.n_train": 50, "run.seed": 7})
    assert cfg.fedavg.rounds == 3 and cfg.data.options == {"n_train": 50} and cfg.run.seed == 7
    with pytest.raises(ConfigError, match=r"^fedavg\.rounds: must be >= 1"):
        with_overrides(cfg, {"fedavg.rounds": 0})
    with pytest.raises(ConfigError, match=r"^fedavg\.nope: unknown key"):
        with_overrides(cfg, {"fedavg.nope": 1})
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("fedavg.rounds")


TINY = {"data": {"participants": 3, "options": {"n_train": 60, "n_test": 20}}, "model": {"options": {"width": 4}}}


@pytest.mark.parametrize("override, key", [
    ({"data.options.colour": 1}, "data.options"),
    ({"model.options.widht": 4}, "model.options"),
    ({"data.partition": "dirichlet", "data.partition_options": {"beta": 1}}, "data.partition_options"),
    ({"data.participants": 500}, "data.participants"),
])
def test_bad_options_fail_while_preparing_naming_the_key(override, key):
    cfg = with_overrides(parse_config(""), {"data": TINY["data"], "model": TINY["model"]})
    with pytest.raises(ConfigError) as info:
        prepare(with_overrides(cfg, override))
    assert str(info.value).startswith(f"{key}: "), str(info.value)


def test_cross_section_error_carries_its_key():
    with pytest.raises(ConfigError) as info:
        parse_config("[data]\nparticipants = 2\n[fedavg]\nparticipants_per_round = 3\n")
    assert info.value.key == "fedavg.participants_per_round"
    with pytest.raises(ConfigError) as info:
        parse_config("[fedavg]\nlr = 0\n")
    assert info.value.key == "fedavg.lr"


@pytest.mark.parametrize("override, message", [
    ({"model.options": {"width": -4}}, "model.options: width must be an integer >= 1 (got -4)"),
    ({"model.options": {"width": 2.5}}, "model.options: width must be an integer >= 1 (got 2.5)"),
    ({"model.options": {"width": "wide"}}, "model.options: width must be an integer >= 1 (got 'wide')"),
    ({"audit.attribute": "shoe_size"}, "audit.attribute: the data set has no attribute 'shoe_size'"),
    ({"audit.rounds": [7]}, "audit.rounds: [7] after the last round (5)"),
    ({"audit.participants": ["participant-042"]}, "audit.participants: no participant participant-042"),
    ({"method.name": "split"}, "audit.enabled: the gradient audit reads FedSGD uploads; the split method has none"),
])
def test_inputs_that_used_to_reach_a_traceback_are_one_line_errors(override, message):
    from cotrain.experiment import load_config, prepare, with_overrides

    base = load_config(Path(__file__).parents[1] / "examples" / "audit_fedsgd_synthetic.toml")
    with pytest.raises(ConfigError) as err:
        prepare(with_overrides(base, override))
    assert str(err.value).startswith(message), str(err.value)
