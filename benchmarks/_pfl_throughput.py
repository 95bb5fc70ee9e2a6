"""pfl 0.6's side of ``simulation_throughput.py``: run under ``torchrun`` in pfl's own virtual environment
(it does not import cotrain). Reads the data, partition, initial weights and steps the parent saved;
writes each round's seconds, start-up and the final test accuracy (rank 0)."""

from __future__ import annotations

import json
import os
import sys
import time

import torch
from torch import nn
from torch.nn.functional import cross_entropy

torch.set_num_threads(1)

from pfl.aggregate.simulate import SimulatedBackend  # noqa: E402
from pfl.algorithm import FederatedAveraging, NNAlgorithmParams  # noqa: E402
from pfl.callback.base import TrainingProcessCallback  # noqa: E402
from pfl.callback.central_evaluation import CentralEvaluationCallback  # noqa: E402
from pfl.data.dataset import Dataset  # noqa: E402
from pfl.data.federated_dataset import FederatedDataset  # noqa: E402
from pfl.data.sampling import get_user_sampler  # noqa: E402
from pfl.hyperparam import NNEvalHyperParams, NNTrainHyperParams  # noqa: E402
from pfl.metrics import Weighted  # noqa: E402
from pfl.model.pytorch import PyTorchModel  # noqa: E402


class SmallCNN(nn.Module):
    """cotrain's ``small_cnn`` (width 16, no norm, flatten) layer for layer, with pfl's loss/metrics."""

    def __init__(self, width: int = 16, classes: int = 10) -> None:
        super().__init__()
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(2 * w * 3 * 3, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def loss(self, x, y, eval=False):
        self.eval() if eval else self.train()
        return cross_entropy(self(x), y)

    @torch.no_grad()
    def metrics(self, x, y, eval=True):
        self.eval()
        logits = self(x)
        n = len(y)
        return {"loss": Weighted(float(cross_entropy(logits, y, reduction="sum")), n),
                "accuracy": Weighted(float((logits.argmax(1) == y).sum()), n)}


class RoundTimer(TrainingProcessCallback):
    def __init__(self) -> None:
        self.marks: list[float] = []
        self.cpu: list[float] = []

    def on_train_begin(self, *, model):
        self.marks.append(time.time())
        self.cpu.append(time.process_time())
        return super().on_train_begin(model=model)

    def after_central_iteration(self, aggregate_metrics, model, *, central_iteration):
        self.marks.append(time.time())
        self.cpu.append(time.process_time())
        return False, type(aggregate_metrics)()


def main(payload: str, out: str) -> None:
    d = torch.load(payload)
    x, y, parts = d["x"], d["y"], d["parts"]
    net = SmallCNN()
    with torch.no_grad():
        for p, v in zip(net.parameters(), d["init"], strict=True):
            p.copy_(v)
    users = list(range(len(parts)))
    train = FederatedDataset(lambda u: Dataset(raw_data=[x[parts[u]], y[parts[u]]], user_id=u),
                             get_user_sampler("minimize_reuse", users),
                             user_id_to_weight={u: len(parts[u]) for u in users})
    test = Dataset(raw_data=[d["test_x"], d["test_y"]], eval_kwargs={"eval": True})
    model = PyTorchModel(model=net, local_optimizer_create=torch.optim.SGD,
                         central_optimizer=torch.optim.SGD(net.parameters(), lr=1.0))
    timer = RoundTimer()
    FederatedAveraging().run(
        algorithm_params=NNAlgorithmParams(central_num_iterations=d["rounds"], evaluation_frequency=1,
                                           train_cohort_size=len(users), val_cohort_size=None),
        backend=SimulatedBackend(training_data=train, val_data=None),
        model=model,
        model_train_params=NNTrainHyperParams(local_learning_rate=d["lr"], local_num_epochs=None,
                                              local_num_steps=d["local_steps"], local_batch_size=d["batch_size"]),
        model_eval_params=NNEvalHyperParams(local_batch_size=1024),
        callbacks=[CentralEvaluationCallback(test, model_eval_params=NNEvalHyperParams(local_batch_size=1024),
                                             frequency=1), timer])
    # CPU seconds of each round but the first, on the busiest rank (as the parent measures cotrain)
    ranks = [timer.cpu]
    if torch.distributed.is_initialized():
        ranks = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(ranks, timer.cpu)
    cpu = [max(r[i + 1] - r[i] for r in ranks) for i in range(1, len(timer.cpu) - 1)]
    if int(os.environ.get("RANK", 0)) == 0:
        metrics = net.metrics(d["test_x"], d["test_y"])
        rounds = [b - a for a, b in zip(timer.marks, timer.marks[1:])]
        with open(out, "w") as f:
            json.dump({"rounds": rounds, "startup_s": timer.marks[0] - d["launched"],
                       "final_accuracy": metrics["accuracy"].overall_value, "cpu_rounds": cpu}, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
