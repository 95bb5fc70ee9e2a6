"""Experiments as files: a TOML config in, a run folder out.

>>> from cotrain.experiment import load_config, run_experiment   # doctest: +SKIP
>>> result = run_experiment(load_config("examples/fedavg_synthetic.toml"))  # doctest: +SKIP
>>> result.summary["final_test_accuracy"]  # doctest: +SKIP
"""

from cotrain.experiment.checkpoint import RunInterrupted
from cotrain.experiment.config import (ExperimentConfig, config_from_dict, config_to_toml, demo_config, load_config,
                                       parse_config, parse_override, save_config, with_overrides)
from cotrain.experiment.errors import ConfigError
from cotrain.experiment.method import (Method, MethodOutcome, RunContext, available_methods, get_method,
                                        register_method)
from cotrain.experiment.report import Report, Section
from cotrain.experiment.rundir import RunFolder, create_run_dir, read_jsonl
from cotrain.experiment.runner import Progress, RunResult, prepare, run_experiment, run_prepared
from cotrain.experiment.resume import resume_config, resume_experiment, resume_prepared

__all__ = [
    "ExperimentConfig", "config_from_dict", "config_to_toml", "demo_config", "load_config", "parse_config",
    "parse_override", "save_config", "with_overrides", "ConfigError", "Method", "MethodOutcome", "RunContext",
    "available_methods", "get_method", "register_method", "Report", "Section", "RunFolder", "create_run_dir",
    "read_jsonl", "Progress", "RunResult", "prepare", "run_experiment", "run_prepared", "RunInterrupted",
    "resume_config", "resume_experiment", "resume_prepared",
]
