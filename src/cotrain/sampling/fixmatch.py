"""FixMatch (Sohn et al., "FixMatch: Simplifying Semi-Supervised Learning with Consistency and
Confidence", NeurIPS 2020) and the supervised baseline, as plain loops any classifier can use.

Per step: B labelled images x_b with labels y_b and mu B unlabelled images u_b. With alpha the weak
view, A the strong view, p(.) the model's softmax and q_b = p(alpha(u_b)) (no gradient),

    L = 1/B sum_b H(y_b, p(alpha(x_b)))
        + lambda_u 1/(mu B) sum_b 1[max q_b >= tau] H(argmax q_b, p(A(u_b))).

The unlabelled term averages over all mu B images, masked ones count as zero (the paper's form).
SGD with Nesterov momentum and the paper's cosine decay lr * cos(7 pi k / (16 K)) over K steps.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from cotrain.data.base import ArrayDataset
from cotrain.errors import ConfigError
from cotrain.sampling.augment import strong_augment, weak_augment
from cotrain.seeding import torch_generator

View = Callable[..., torch.Tensor]  # view(x (N, C, H, W), generator=g) -> (N, C, H, W)


def fixmatch_loss(logits_labelled: torch.Tensor, y: torch.Tensor, logits_weak: torch.Tensor,
                  logits_strong: torch.Tensor, *, threshold: float = 0.95,
                  lambda_u: float = 1.0) -> tuple[torch.Tensor, dict]:
    """FixMatch's loss (module docstring). Shapes: logits (B, K), y (B,), logits_weak and
    logits_strong (U, K). Returns the loss and floats ``loss_x``, ``loss_u``, ``mask_rate``
    (share of unlabelled images over the threshold) and ``pseudo_labels`` (a (U,) tensor)."""
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"fixmatch threshold must be in [0, 1], got {threshold}")
    if logits_weak.shape != logits_strong.shape:
        raise ConfigError(f"weak and strong logits differ in shape: {tuple(logits_weak.shape)} vs "
                          f"{tuple(logits_strong.shape)}")
    loss_x = F.cross_entropy(logits_labelled, y)
    with torch.no_grad():
        conf, pseudo = torch.softmax(logits_weak.detach().float(), dim=1).max(dim=1)
        mask = (conf >= threshold).to(logits_strong.dtype)
    if len(logits_strong):
        loss_u = (F.cross_entropy(logits_strong, pseudo, reduction="none") * mask).mean()
    else:
        loss_u = logits_strong.sum() * 0.0
    loss = loss_x + lambda_u * loss_u
    stats = {"loss_x": loss_x.item(), "loss_u": loss_u.item(),
             "mask_rate": float(mask.mean()) if len(mask) else 0.0, "pseudo_labels": pseudo, "mask": mask.bool()}
    return loss, stats


class BatchSampler:
    """Endless batches of indices 0..n-1: a fresh seeded permutation per pass (no index repeats
    inside a pass; a batch larger than n draws from several passes)."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator) -> None:
        if n < 1 or batch_size < 1:
            raise ConfigError(f"need at least one sample and batch_size >= 1, got n={n}, batch_size={batch_size}")
        self.n, self.batch_size, self.generator = n, batch_size, generator
        self._order = torch.zeros(0, dtype=torch.long)

    def next(self) -> torch.Tensor:
        while len(self._order) < self.batch_size:
            self._order = torch.cat([self._order, torch.randperm(self.n, generator=self.generator)])
        idx, self._order = self._order[: self.batch_size], self._order[self.batch_size:]
        return idx


def make_optimizer(model: nn.Module, *, lr: float, momentum: float, weight_decay: float,
                   steps: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """SGD (Nesterov when momentum > 0) and FixMatch's cosine decay cos(7 pi k / (16 K))."""
    if steps < 1 or lr <= 0:
        raise ConfigError(f"need steps >= 1 and lr > 0, got steps={steps}, lr={lr}")
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, nesterov=momentum > 0,
                          weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: math.cos(7 * math.pi * k / (16 * steps)))
    return opt, sched


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return torch.device("cpu") if p is None else p.device


@torch.no_grad()
def accuracy(model: nn.Module, data: ArrayDataset, *, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` on ``data`` (eval mode, restored after)."""
    was_training, dev = model.training, _device(model)
    model.eval()
    correct = 0
    for i in range(0, len(data), batch_size):
        correct += int((model(data.x[i:i + batch_size].to(dev)).argmax(1).cpu() == data.y[i:i + batch_size]).sum())
    model.train(was_training)
    return correct / max(len(data), 1)


def _check_labels(labelled: ArrayDataset) -> None:
    if len(labelled) == 0 or int(labelled.y.min()) < 0:
        raise ConfigError("the labelled set must be non-empty with labels >= 0 (drop unlabelled / OOD images, "
                          "label -1, before training)")


class _Meter:
    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.n = 0

    def add(self, **values: float) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.n += 1

    def means(self) -> dict[str, float]:
        return {k: v / max(self.n, 1) for k, v in self.sums.items()}


def train_fixmatch(model: nn.Module, labelled: ArrayDataset, unlabelled_x: torch.Tensor, *, steps: int,
                   batch_size: int = 64, mu: int = 7, lr: float = 0.03, momentum: float = 0.9,
                   weight_decay: float = 5e-4, threshold: float = 0.95, lambda_u: float = 1.0, seed: int,
                   weak: View = weak_augment, strong: View = strong_augment, log_every: int = 100,
                   unlabelled_y: torch.Tensor | None = None) -> dict:
    """Train ``model`` in place with FixMatch; return JSON-ready statistics.

    ``unlabelled_y`` (hidden labels, -1 for none) is only read to report how often the confident
    pseudo-labels are right (``pseudo_label_accuracy``); the loss never sees it. Returns ``steps``,
    ``seconds``, ``mask_rate`` and the losses averaged over the run, and ``history``: the same
    averaged over each ``log_every`` steps.
    """
    _check_labels(labelled)
    if mu < 1 or len(unlabelled_x) == 0:
        raise ConfigError(f"FixMatch needs mu >= 1 and unlabelled images, got mu={mu}, {len(unlabelled_x)} images")
    dev, start = _device(model), time.perf_counter()
    lab = BatchSampler(len(labelled), batch_size, torch_generator(seed, "fixmatch", "labelled"))
    unl = BatchSampler(len(unlabelled_x), mu * batch_size, torch_generator(seed, "fixmatch", "unlabelled"))
    g_aug = torch_generator(seed, "fixmatch", "augment")
    opt, sched = make_optimizer(model, lr=lr, momentum=momentum, weight_decay=weight_decay, steps=steps)
    total, window, history = _Meter(), _Meter(), []
    model.train()
    for step in range(1, steps + 1):
        i, j = lab.next(), unl.next()
        u = unlabelled_x[j]
        xb = torch.cat([weak(labelled.x[i], generator=g_aug), weak(u, generator=g_aug), strong(u, generator=g_aug)])
        logits = model(xb.to(dev))
        b, m = len(i), len(j)
        loss, st = fixmatch_loss(logits[:b], labelled.y[i].to(dev), logits[b:b + m], logits[b + m:],
                                 threshold=threshold, lambda_u=lambda_u)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        row = {"loss": loss.item(), "loss_x": st["loss_x"], "loss_u": st["loss_u"], "mask_rate": st["mask_rate"]}
        if unlabelled_y is not None:
            yu, mk = unlabelled_y[j].to(dev), st["mask"] & (unlabelled_y[j].to(dev) >= 0)
            if mk.any():
                row["pseudo_label_accuracy"] = float((st["pseudo_labels"][mk] == yu[mk]).float().mean())
        total.add(**row)
        window.add(**row)
        if step % log_every == 0 or step == steps:
            history.append({"step": step, **window.means()})
            window = _Meter()
    return {"steps": steps, "seconds": time.perf_counter() - start, **total.means(), "history": history}


def train_supervised(model: nn.Module, labelled: ArrayDataset, *, steps: int, batch_size: int = 64,
                     lr: float = 0.03, momentum: float = 0.9, weight_decay: float = 5e-4, seed: int,
                     weak: View | None = weak_augment, log_every: int = 100) -> dict:
    """Cross-entropy on ``labelled`` (its weak view unless ``weak=None``) with FixMatch's optimiser
    and schedule, so the two differ only in the unlabelled term. Returns ``steps``, ``seconds``,
    ``loss`` and ``history``."""
    _check_labels(labelled)
    dev, start = _device(model), time.perf_counter()
    lab = BatchSampler(len(labelled), batch_size, torch_generator(seed, "supervised", "labelled"))
    g_aug = torch_generator(seed, "supervised", "augment")
    opt, sched = make_optimizer(model, lr=lr, momentum=momentum, weight_decay=weight_decay, steps=steps)
    total, window, history = _Meter(), _Meter(), []
    model.train()
    for step in range(1, steps + 1):
        i = lab.next()
        x = labelled.x[i] if weak is None else weak(labelled.x[i], generator=g_aug)
        loss = F.cross_entropy(model(x.to(dev)), labelled.y[i].to(dev))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        total.add(loss=loss.item())
        window.add(loss=loss.item())
        if step % log_every == 0 or step == steps:
            history.append({"step": step, **window.means()})
            window = _Meter()
    return {"steps": steps, "seconds": time.perf_counter() - start, **total.means(), "history": history}
