"""Baselines on the same uploads.

* :class:`BatchPropertyInference` — batch-level property inference from gradients (Melis et al.,
  "Exploiting Unintended Feature Leakage in Collaborative Learning", S&P 2019). The server draws
  ``T`` batches of size ``B`` from its auxiliary data with random attribute proportions
  ``pi_t ~ Dirichlet(1)``, computes their gradients ``g_t`` on the shared model (the last block and
  the head, the same tensors the feature reconstruction reads), and fits a ridge regression
  ``pi_hat = R(g)`` on standardised gradients. Applied to the upload it gives the batch's attribute
  distribution; as a per-sample guess every sample gets ``argmax pi_hat``.
* :func:`reconstruct_inputs` — input reconstruction from the whole model's gradient (Inverting
  Gradients, Geiping et al. 2020; DLG, Zhu et al. 2019): dummy inputs ``x_hat`` ``(B, *input)`` minimise
  ``1 - cos(g, g_hat(x_hat))`` over all parameters plus ``tv * TV(x_hat)``, with labels recovered
  from the head (iDLG); the shared model's features of ``x_hat`` then go to the attribute classifier.
  Without a batch size in the upload's metadata, ``B`` is estimated from the gradient and the
  server's auxiliary data (:func:`~cotrain.audit.batch_size.estimate_batch_size`), as
  :func:`~cotrain.audit.api.audit_upload` does.
* Oracle (the classifier on the true features) and majority guess are one-liners in the benchmark.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from sklearn.linear_model import Ridge
from sklearn.preprocessing import StandardScaler
from torch import nn

from cotrain.audit.batch_size import estimate_batch_size
from cotrain.audit.distance import cosine_term, flatten
from cotrain.audit.labels import bias_signal, counts_to_labels, head_gradients, recover_label_counts
from cotrain.audit.threat_model import ObservedUpload, block_parameter_names, head_parameter_names
from cotrain.models.blocks import BlockModel
from cotrain.seeding import numpy_rng


def _last_gradient(model: BlockModel, block_inputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Flattened gradient of the last block and head for one batch given its last-block inputs."""
    last, head = model.last_block_and_head()
    params = list(last.parameters()) + list(head.parameters())
    loss = nn.functional.cross_entropy(head(last(block_inputs).reshape(len(y), -1)), y)
    return flatten(torch.autograd.grad(loss, params)).detach()


class BatchPropertyInference:
    """Melis et al. (2019) batch property inference, as ridge regression on the attribute distribution."""

    def __init__(self, *, num_batches: int = 64, alpha: float = 10.0, seed: int = 0) -> None:
        self.num_batches = num_batches
        self.alpha = alpha
        self.seed = seed
        self.scaler = StandardScaler()
        self.ridge = Ridge(alpha=alpha)
        self.num_values = 0

    def fit(self, model: BlockModel, x_aux: torch.Tensor, y_aux: torch.Tensor, a_aux: torch.Tensor,
            batch_size: int) -> "BatchPropertyInference":
        """Simulate ``num_batches`` batches of ``batch_size`` from the auxiliary data and fit the regression."""
        rng = numpy_rng(self.seed, "batch_property", batch_size)
        a = a_aux.cpu().numpy()
        self.num_values = int(a.max()) + 1
        pools = [np.flatnonzero(a == v) for v in range(self.num_values)]
        with torch.no_grad():
            model.eval()
            inputs = torch.cat([model.features(x_aux[s:s + 512], model.num_blocks - 1)
                                for s in range(0, len(x_aux), 512)])
        model.train()
        feats, targets = [], []
        for _ in range(self.num_batches):
            pi = rng.dirichlet(np.ones(self.num_values))
            counts = np.bincount(rng.choice(self.num_values, size=batch_size, p=pi), minlength=self.num_values)
            idx = np.concatenate([rng.choice(p, size=c, replace=len(p) < c) for p, c in zip(pools, counts) if c])
            i = torch.as_tensor(idx)
            feats.append(_last_gradient(model, inputs[i], y_aux[i]).numpy())
            targets.append(counts / batch_size)
        self.ridge.fit(self.scaler.fit_transform(np.stack(feats)), np.stack(targets))
        return self

    def predict_proportion(self, model: BlockModel, upload: ObservedUpload) -> np.ndarray:
        names = block_parameter_names(model, -1) + head_parameter_names(model)
        g = flatten([upload.gradients[n] for n in names]).numpy()[None]
        p = np.clip(self.ridge.predict(self.scaler.transform(g))[0], 0.0, None)
        return p / p.sum() if p.sum() > 0 else np.full(self.num_values, 1.0 / self.num_values)

    def predict_samples(self, model: BlockModel, upload: ObservedUpload) -> np.ndarray:
        """Per-sample guess: the predicted majority value for every sample of the batch."""
        if upload.batch_size is None:
            raise ValueError("predict_samples needs the upload's batch size; estimate it first with "
                             "cotrain.audit.batch_size.estimate_batch_size and set ObservedUpload.batch_size")
        p = self.predict_proportion(model, upload)
        return np.full(int(upload.batch_size), int(np.argmax(p)))


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic TV of images ``(B, C, H, W)``: mean absolute difference of neighbours."""
    if x.dim() < 4:
        return x.new_zeros(())
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


def reconstruct_inputs(model: BlockModel, upload: ObservedUpload, input_shape: tuple[int, ...], *,
                       steps: int = 1000, lr: float = 0.1, tv: float = 1e-2,
                       class_probs: torch.Tensor | None = None, time_limit: float | None = None,
                       seed: int = 0, aux: tuple[torch.Tensor, torch.Tensor] | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverting Gradients: ``(x_hat (B, *input_shape), labels (B,))`` from the whole model's gradient.

    ``aux``: the server's labelled auxiliary samples ``(x, y)``, needed only when the upload's
    metadata has no batch size: ``B`` is then estimated (:func:`~cotrain.audit.batch_size.estimate_batch_size`).
    """
    t0 = time.perf_counter()
    if upload.batch_size is not None:
        b = int(upload.batch_size)
    elif aux is not None:
        b = estimate_batch_size(model, upload, aux[0], aux[1]).estimate
    else:
        raise ValueError("the upload carries no batch size: pass aux=(x_aux, y_aux), the server's labelled "
                         "auxiliary samples, to estimate it with cotrain.audit.batch_size.estimate_batch_size, "
                         "or set ObservedUpload.batch_size")
    net = upload.shared_model(model)
    net.train()
    dw, db = head_gradients(net, upload)
    labels = counts_to_labels(recover_label_counts(bias_signal(dw, db), b, class_probs))
    names = [n for n, _ in net.named_parameters()]
    params = [p for _, p in net.named_parameters()]
    target = flatten([upload.gradients[n] for n in names]).detach()
    gen = torch.Generator().manual_seed(seed)
    x_hat = torch.randn((b, *input_shape), generator=gen).requires_grad_(True)
    opt = torch.optim.Adam([x_hat], lr=lr)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / max(steps, 1)))
        loss = nn.functional.cross_entropy(net(x_hat), labels)
        g_hat = flatten(torch.autograd.grad(loss, params, create_graph=True))
        obj = cosine_term(target, g_hat) + tv * total_variation(x_hat)
        (gx,) = torch.autograd.grad(obj, [x_hat])
        x_hat.grad = gx.sign()  # signed gradients, as in Geiping et al.
        opt.step()
        if time_limit is not None and time.perf_counter() - t0 > time_limit:
            break
    return x_hat.detach(), labels
