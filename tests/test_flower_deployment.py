"""Flower deployment operations: time limits, no process left behind, a SuperNode lost mid-run,
TLS with node authentication, and each node's data cache.

The tests marked ``flower`` start real SuperLink and SuperNode processes on 127.0.0.1.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import pytest
import torch

pytest.importorskip("flwr")

sys.path.insert(0, str(Path(__file__).parent))

from _flower_helpers import assert_nothing_left, make_node_key, make_tls  # noqa: E402

from cotrain.errors import ConfigError  # noqa: E402
from cotrain.experiment.config import ExperimentConfig  # noqa: E402
from cotrain.runtime.ports import free_port  # noqa: E402
from cotrain.runtime.flower.launch import (Federation, FlowerLaunchError, Limits,  # noqa: E402
                                           run_flower_deployment)

FEDAVG = "cotrain.experiment.methods.fedavg:FLOWER_JOB"


def _cfg(participants: int = 3, rounds: int = 2, **run) -> ExperimentConfig:
    """A tiny MLP on tiny synthetic data, every participant every round."""
    return ExperimentConfig.model_validate({
        "run": {"seed": 5, **run},
        "data": {"dataset": "synthetic", "participants": participants,
                 "options": {"n_train": 40 * participants, "n_test": 40, "size": 16, "num_classes": 3}},
        "model": {"name": "mlp", "options": {"hidden": [8]}},
        "fedavg": {"rounds": rounds, "participants_per_round": participants, "local_steps": 2, "batch_size": 8},
    })


# -- time limits (no processes) ----------------------------------------------------------
def test_default_limits_grow_with_exchanges_and_participants():
    # Prepare / Execute
    deployment = Limits().resolved(exchanges=3, participants=4, simulation=False)
    simulation = Limits().resolved(exchanges=5, participants=1000, simulation=True)
    given = Limits(timeout_s=9.0, node_wait_s=2.0).resolved(exchanges=3, participants=4, simulation=False)
    # Assert: 300 + 3 * (60 + 10 * 4) = 600; 300 + 10 * 4 = 340; 60 + 2 * 4 = 68
    assert (deployment.timeout_s, deployment.reply_timeout_s, deployment.node_wait_s) == (600.0, 340.0, 68.0)
    # 300 + 5 * (60 + 1000) = 5600 s: eleven times the 504 s a 1000-participant, 5-round run needed
    assert (simulation.timeout_s, simulation.reply_timeout_s, simulation.node_wait_s) == (5600.0, 1300.0, 2060.0)
    assert (given.timeout_s, given.reply_timeout_s, given.node_wait_s) == (9.0, 340.0, 2.0)


def test_run_limits_are_config_values():
    cfg = _cfg(timeout_s=30, reply_timeout_s=5.5, node_wait_s=7)
    assert (cfg.run.timeout_s, cfg.run.reply_timeout_s, cfg.run.node_wait_s) == (30.0, 5.5, 7.0)
    assert _cfg().run.timeout_s is None  # the scaled default
    with pytest.raises(Exception, match="timeout_s"):
        _cfg(timeout_s=0)


# -- security config (no processes) ------------------------------------------------------
def test_missing_security_files_are_one_line_errors_naming_the_key(tmp_path):
    from cotrain.experiment.flower import flower_security
    from cotrain.experiment.prepare import check_deployment_files

    tls = make_tls(tmp_path / "tls")
    key = make_node_key(tmp_path / "keys" / "node-0")
    files = {"ca_certfile": str(tls.ca_certfile), "certfile": str(tls.certfile), "keyfile": str(tls.keyfile)}
    cases = [
        ({"tls": {**files, "certfile": str(tmp_path / "nope.pem")}}, "run.tls.certfile"),
        ({"node_keys": [str(key)]}, "run.node_keys"),  # authentication without TLS
        ({"tls": files, "node_keys": [str(tmp_path / "keys" / "node-9")]}, "run.node_keys"),
    ]
    for run, key_name in cases:
        cfg = _cfg(runtime="flower-deployment", **run)
        with pytest.raises(ConfigError) as err:
            check_deployment_files(cfg)
        assert err.value.key == key_name and "\n" not in str(err.value), str(err.value)
    with pytest.raises(ConfigError, match="run.tls: applies to runtime"):
        check_deployment_files(_cfg(runtime="flower-simulation", tls=files))
    ok = _cfg(runtime="flower-deployment", tls=files, node_keys=[str(key)])
    check_deployment_files(ok)
    with pytest.raises(ConfigError, match="1 node keys for 3 nodes"):
        flower_security(ok, 3)


# -- processes ---------------------------------------------------------------------------
@pytest.mark.flower
def test_ctrl_c_sigterm_and_failures_leave_no_process(tmp_path, monkeypatch):
    """KeyboardInterrupt or SIGTERM after the SuperNodes started, and a run out of time: nothing is left."""
    cfg = _cfg(participants=2, rounds=1)
    launch = lambda name, **kw: run_flower_deployment(cfg.model_dump_json(), job=FEDAVG,  # noqa: E731
                                                      num_participants=2, workdir=tmp_path / name, **kw)

    def interrupted(self, *args, **kwargs):
        time.sleep(2.0)  # the SuperNodes (and their SuperExec children) are up
        raise KeyboardInterrupt

    def terminated(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5.0)  # the handler raises before this ends

    monkeypatch.setattr(Federation, "submit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        launch("ctrl-c")
    names = json.loads((tmp_path / "ctrl-c" / "logs" / "pids.json").read_text())["names"]
    assert {"superlink", "supernode-0", "supernode-1"} <= set(names)
    assert_nothing_left(tmp_path / "ctrl-c")

    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        monkeypatch.setattr(Federation, "submit", terminated)
        with pytest.raises(SystemExit) as exit_:
            launch("sigterm")
        assert exit_.value.code == 143 and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
        assert_nothing_left(tmp_path / "sigterm")

    monkeypatch.undo()
    with pytest.raises(FlowerLaunchError, match=r"within 1 s \(timeout_s\)"):
        launch("timeout", limits=Limits(timeout_s=1.0))
    assert_nothing_left(tmp_path / "timeout")


def _kill_when_trained(workdir: Path, node: str, killed: dict) -> None:
    """Kill SuperNode ``node`` (its whole process group) once it has received its first train message."""
    log, pids = workdir / "logs" / f"{node}.log", workdir / "logs" / "pids.json"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if log.exists() and "Receiving: train message" in log.read_text(errors="replace"):
            pid = json.loads(pids.read_text())["names"][node]
            os.killpg(pid, signal.SIGKILL)
            killed["at"] = time.monotonic()
            return
        time.sleep(0.2)


@pytest.mark.flower
@pytest.mark.slow
@pytest.mark.timeout(900)  # a process per message: minutes on a loaded 2-core machine
def test_a_supernode_killed_mid_run_is_recorded_failed_and_the_run_completes(tmp_path):
    # Prepare: 3 nodes, all sampled in each of 2 rounds; node 2 is killed during round 1's training
    cfg = _cfg(participants=3, rounds=2)
    killed: dict = {}
    killer = threading.Thread(target=_kill_when_trained, args=(tmp_path, "supernode-2", killed), daemon=True)
    killer.start()
    # Execute
    history, ledger, state = run_flower_deployment(cfg.model_dump_json(), job=FEDAVG, num_participants=3,
                                                   workdir=tmp_path, limits=Limits(reply_timeout_s=180.0))
    killer.join(timeout=5)
    # Assert: it was killed mid-run, both rounds went on with the other two, its replies recorded failed
    assert "at" in killed
    assert [r["round"] for r in history] == [1, 2]
    for r in history:
        assert r["participants"] == ["participant-000", "participant-001", "participant-002"]
        assert set(r["failed"]) == {"participant-002"}
        assert set(r["participant_metrics"]) == {"participant-000", "participant-001"}
    assert {(f["round"], f["participant"]) for f in ledger.failures} == {(1, "participant-002"), (2, "participant-002")}
    assert all(torch.isfinite(t).all() for t in state.values())
    assert_nothing_left(tmp_path)


def _start_intruder(runs: Path, key: Path, ca: Path, out: dict) -> None:
    """Once the run's SuperLink listens (TLS: check the handshake against ``ca``), start an
    unregistered SuperNode with a valid key that claims partition 0."""
    import socket
    import ssl

    deadline = time.monotonic() + 120
    config = None
    while time.monotonic() < deadline and config is None:
        found = list(runs.glob("*/flower/flwr_home/config.toml"))
        config = found[0] if found else None
        time.sleep(0.1)
    address = tomllib.loads(config.read_text())["superlink"]["cotrain"]["address"]
    out["workdir"] = config.parent.parent
    context = ssl.create_default_context(cafile=str(ca))
    while time.monotonic() < deadline and "tls" not in out:
        try:
            with socket.create_connection(("127.0.0.1", int(address.rsplit(":", 1)[1])), timeout=2) as raw:
                with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                    out["tls"] = tls.version()
        except OSError:
            time.sleep(0.1)
    with open(out["workdir"] / "intruder.log", "wb") as log:
        out["proc"] = subprocess.Popen(
            [str(Path(sys.executable).parent / "flower-supernode"), "--root-certificates", str(ca),
             "--auth-supernode-private-key", str(key), "--superlink", address,
             "--node-config", "partition-id=0 num-partitions=2", "--port", str(free_port())],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "FLWR_TELEMETRY_ENABLED": "0",
                 "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")})


@pytest.mark.flower
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_tls_and_node_authentication_admit_registered_nodes_only(tmp_path):
    """TLS on, authentication on (the config's run.tls and run.node_keys): the two registered nodes
    train; an unregistered node with a valid key claiming partition 0 is refused and never takes part
    (had it joined, two nodes would claim partition 0 and the run would fail)."""
    from cotrain.experiment import run_experiment

    # Prepare
    tls = make_tls(tmp_path / "tls")
    keys = [str(make_node_key(tmp_path / "keys" / f"node-{i}")) for i in range(2)]
    cfg = _cfg(participants=2, rounds=1, runtime="flower-deployment", output_dir=str(tmp_path / "runs"),
               tls={"ca_certfile": str(tls.ca_certfile), "certfile": str(tls.certfile), "keyfile": str(tls.keyfile)},
               node_keys=keys)
    intruder: dict = {}
    watcher = threading.Thread(target=_start_intruder, daemon=True,
                               args=(tmp_path / "runs", make_node_key(tmp_path / "keys" / "intruder"),
                                     tls.ca_certfile, intruder))
    watcher.start()
    # Execute
    try:
        result = run_experiment(cfg)
        watcher.join(timeout=10)
        rc = intruder["proc"].wait(timeout=90)
    finally:  # the intruder's group: the SuperNode and the SuperExec it started
        if "proc" in intruder:
            try:
                os.killpg(intruder["proc"].pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            intruder["proc"].wait()
    # Assert: TLS served the SuperLink's certificate; only the registered nodes took part; the
    # intruder was refused activation and exited
    workdir = intruder["workdir"]
    assert intruder["tls"].startswith("TLSv1")
    assert [r["round"] for r in result.history] == [1]
    assert result.history[0]["participants"] == ["participant-000", "participant-001"]
    assert not result.history[0]["failed"]
    assert sorted(json.loads((workdir / "results" / "done.json").read_text())["nodes"]) == [
        "participant-000", "participant-001"]
    log = (workdir / "intruder.log").read_text(errors="replace")
    assert rc != 0 and "Failed to activate SuperNode" in log, log[-2000:]
    assert_nothing_left(workdir)
