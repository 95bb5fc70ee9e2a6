"""The ``ecos`` method: collaborative open-source sampling (:mod:`cotrain.sampling`) as an experiment.

Hong, Lyu, Zhou, Spranger, "Outsourcing Training without Uploading Data via Efficient
Collaborative Open-Source Sampling", NeurIPS 2022. ``[data]`` is the client's private data (one
participant: its train split, and its test split, which only it holds); ``[ecos] pool`` names the
cloud's open-source data sets, whose train splits are brought to the client's input shape and
pooled. The cloud trains phi on the pool, clusters it, sends the centroids (and phi) down; the
client answers with DP-noised coverage scores; the cloud selects ``budget`` pool samples, has them
labelled (here: the pool's own labels, the labeller), trains ``[model]`` on them (downstream (a),
supervised or FixMatch-style with the unlabelled pool), and sends the model down; the client
reports its test accuracy only. Every message is on the ledger; epsilon comes from the accountant.
In process or on Flower (``run.runtime``): the cloud is the ServerApp, the client a ClientApp that
loads only its own data; the same seed gives the same selection, model and ledger.
"""

from __future__ import annotations

import math
from dataclasses import fields
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from cotrain.experiment.method import Method, MethodOutcome, RunContext, register_method
from cotrain.experiment.records import ExperimentRound
from cotrain.experiment.section import Section
from cotrain.experiment.flower import config_job
from cotrain.sampling.protocol import EcosClient, EcosSettings

if TYPE_CHECKING:
    from cotrain.experiment.checkpoint import RunCheckpoint
    from cotrain.experiment.config import ExperimentConfig
    from cotrain.runtime.job import ServerResult
    from cotrain.runtime.ledger import Ledger
    from cotrain.sampling.protocol import EcosResult

_DEFAULTS = EcosSettings()


class EcosSection(Section):
    """``[ecos]``: the pool, the protocol's options (:class:`~cotrain.sampling.protocol.EcosSettings`'
    defaults) and the downstream training on the selection."""

    pool: list[str] = Field(default_factory=lambda: ["synthetic"], min_length=1,
                            description="registered data sets whose train splits form the cloud's pool")
    pool_options: dict[str, dict[str, Any]] = Field(default_factory=dict, description="reader options by data set")
    pool_max_per_source: int | None = Field(None, ge=1)
    budget: int = Field(_DEFAULTS.budget, ge=1)
    k: int = Field(_DEFAULTS.k, ge=1)
    rule: str = _DEFAULTS.rule
    rule_options: dict[str, Any] = Field(default_factory=dict)
    epsilon: float = Field(_DEFAULTS.epsilon, gt=0, allow_inf_nan=True, description="inf: exact scores, no noise, no claim")
    delta: float = Field(_DEFAULTS.delta, gt=0, lt=1)
    noise_multiplier: float | None = Field(_DEFAULTS.noise_multiplier, gt=0)
    threshold: float = _DEFAULTS.threshold
    temperature: float | None = Field(_DEFAULTS.temperature, gt=0)
    candidate_factor: float = Field(_DEFAULTS.candidate_factor, ge=1)
    encoder: str = _DEFAULTS.encoder
    encoder_dim: int = Field(_DEFAULTS.encoder_dim, ge=1)
    encoder_width: int = Field(_DEFAULTS.encoder_width, ge=1)
    encoder_steps: int = Field(_DEFAULTS.encoder_steps, ge=0)
    kmeans_niter: int = Field(_DEFAULTS.kmeans_niter, ge=1)
    trainer: Literal["supervised", "fixmatch"] = "supervised"
    train_steps: int = Field(500, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(0.03, gt=0)

    def settings(self) -> EcosSettings:
        names = {f.name for f in fields(EcosSettings)}
        return EcosSettings(**{n: getattr(self, n) for n in names})


def _pool(cfg: "ExperimentConfig", shape: tuple[int, ...]) -> tuple[Any, Any, Any, list[str]]:
    """The pooled images (N, *shape), their hidden labels, their source index, the source names
    (a data set's domains, when it has several, are sources of their own)."""
    import numpy as np
    import torch

    from cotrain.data.transforms import resize, to_grayscale, to_rgb
    from cotrain.experiment.prepare import load_domain

    s = cfg.ecos
    xs, ys, src, names = [], [], [], []
    for name in s.pool:
        split = load_domain(cfg, "ecos.pool", name, dict(s.pool_options.get(name, {})),
                            max_train=s.pool_max_per_source, max_test=1, stream=f"ecos-pool-{name}").train
        x = resize(split.x, shape[-1]) if split.x.shape[-1] != shape[-1] else split.x
        x = to_rgb(x) if shape[0] == 3 and x.shape[1] == 1 else to_grayscale(x) if shape[0] == 1 and x.shape[1] == 3 else x
        if tuple(x.shape[1:]) != tuple(shape):
            from cotrain.errors import ConfigError

            raise ConfigError(f"ecos.pool: {name!r} images are {tuple(x.shape[1:])}, the client's {tuple(shape)}",
                              key="ecos.pool")
        xs.append(x)
        ys.append(split.y)
        dom = split.domain if split.domain is not None and int(split.domain.max()) > 0 else None
        parts = sorted(set(dom.tolist())) if dom is not None else [None]
        tag = torch.zeros(len(x), dtype=torch.long)
        for d in parts:
            tag[dom == d if d is not None else slice(None)] = len(names)
            names.append(name if d is None else f"{name} (domain {d})")
        src.append(tag)
    return torch.cat(xs), torch.cat(ys), np.asarray(torch.cat(src)), names


def _result_state(result: "EcosResult") -> dict[str, Any]:
    """What the cloud keeps of the exchange, as tensors and plain values (the released scores and the
    selection; nothing of the client's beyond what it sent)."""
    import torch

    a = result.allocation
    return {"indices": torch.as_tensor(result.indices), "noisy_scores": torch.as_tensor(result.noisy_scores),
            "counts": torch.as_tensor(a.counts), "weights": torch.as_tensor(a.weights), "fallback": bool(a.fallback),
            "epsilon": float(result.epsilon), "delta": float(result.delta),
            "bytes": [result.bytes_encoder, result.bytes_centroids, result.bytes_scores, result.bytes_values]}


def _resumed(checkpoint: "RunCheckpoint | None", grid: Any) -> "EcosResult | None":
    """The exchange of a run resumed after it (its ledger put back), or None when it has to run."""
    if checkpoint is None or checkpoint.saved is None:
        return None
    from cotrain.experiment.checkpoint import set_rng_state
    from cotrain.sampling.protocol import EcosResult
    from cotrain.sampling.selection import Allocation

    state = checkpoint.saved["ecos"]
    ledger: "Ledger" = grid.ledger
    checkpoint.restore_ledger(ledger)
    set_rng_state(checkpoint.saved["rng"])
    spends = tuple(ledger.privacy)
    b_enc, b_cen, b_sco, b_val = (int(v) for v in state["bytes"])
    return EcosResult(indices=state["indices"].numpy(), noisy_scores=state["noisy_scores"].numpy(),
                      allocation=Allocation(state["counts"].numpy(), state["weights"].numpy(), bool(state["fallback"])),
                      epsilon=float(state["epsilon"]), delta=float(state["delta"]), bytes_encoder=b_enc,
                      bytes_centroids=b_cen, bytes_scores=b_sco, bytes_values=b_val, spends=spends)


def _client_id(cfg: "ExperimentConfig", index: int) -> str:
    from cotrain.experiment.setup import participant_id

    return participant_id(index)


def _client(cfg: "ExperimentConfig", index: int) -> EcosClient:
    """The client on its own node: its private train and test splits only (the pool stays in the cloud)."""
    from cotrain.experiment.prepare import prepare_data

    data = prepare_data(cfg)
    return EcosClient(_client_id(cfg, index), data.participant_data(index), seed=cfg.run.seed, test=data.splits.test)


def _serve(grid: Any, cfg: "ExperimentConfig") -> "ServerResult":
    return OpenSourceSampling(cfg).serve(grid)


FLOWER_JOB = config_job(serve=_serve, build_participant=_client, num_participants=lambda cfg: 1,
                        participant_id=_client_id, exchanges=lambda cfg: 4)  # offer, encoder, scores, evaluation


@register_method("ecos", section=EcosSection)
class OpenSourceSampling(Method):
    """One client, a cloud with an open-source pool: ECOS selection, then the cloud trains for the client."""

    flower_job = "cotrain.experiment.methods.ecos:FLOWER_JOB"

    def __init__(self, cfg: "ExperimentConfig") -> None:
        from cotrain.errors import ConfigError
        from cotrain.experiment.prepare import check_model_options, prepare_data, require_runtime, under_key

        super().__init__(cfg)
        require_runtime(cfg, ("inprocess", "flower-simulation", "flower-deployment"), "")
        if cfg.data.participants != 1:
            raise ConfigError("data.participants: ECOS has one client; set data.participants = 1",
                              key="data.participants")
        self.settings = under_key("ecos", cfg.ecos.settings)
        self.data = prepare_data(cfg)
        check_model_options(cfg)
        self.client_train, self.client_test = self.data.participant_data(0), self.data.splits.test
        self.pool_x, self.pool_y, self.pool_source, self.sources = _pool(cfg, self.client_train.input_shape)
        if self.settings.budget > len(self.pool_x):
            raise ConfigError(f"ecos.budget: {self.settings.budget} exceeds the pool's {len(self.pool_x)} samples",
                              key="ecos.budget")

    @property
    def total_rounds(self) -> int:
        return 1

    @property
    def resumable(self) -> bool:
        """In process: the run checkpoints once the client's scores are in, so ``--resume`` selects and
        trains from them without a second release (and a second spend)."""
        return self.cfg.run.runtime == "inprocess"

    @property
    def test_samples(self) -> int:
        return len(self.client_test)

    def run(self, ctx: RunContext) -> MethodOutcome:
        from cotrain.experiment.plots import plot_coverage
        from cotrain.experiment.report import image_html, key_value_html, table_html
        from cotrain.runtime import InProcessGrid

        client = _client_id(self.cfg, 0)
        exact = None
        if self.cfg.run.runtime == "inprocess":
            node = EcosClient(client, self.client_train, seed=self.cfg.run.seed, test=self.client_test)
            grid = InProcessGrid({client: node})
            out = self.serve(grid, ctx.checkpoint)
            record, artifacts, state, ledger = out.history[0], out.artifacts, out.state_dict, grid.ledger
            ctx.on_round(record)
            exact = node.exact_scores  # the client's own view, read in process for the report only
        else:  # the cloud is the ServerApp, the client a ClientApp; only the messages below cross
            history, ledger, state, artifacts = self.run_on_flower(ctx)
            record = history[0]
        summary, table, coverage = artifacts["summary"], artifacts["clusters"], artifacts["coverage"]
        for row in table:
            row["exact"] = float(exact[row["cluster"]]) if exact is not None else None
        png = plot_coverage(coverage["noisy"], coverage["allocated"], ctx.run_dir / "coverage.png",
                            exact=None if exact is None else [float(v) for v in exact],
                            composition=summary["selection_by_source"])
        ctx.report.add_section("Open-source sampling (ECOS)", key_value_html(summary) + image_html(
            png, alt="coverage per cluster", caption="Noisy coverage score per cluster (what the client sent), the "
            "samples the cloud allocated to it and the selection's sources; the exact counts are drawn only in "
            "process (on Flower they never leave the client).") + table_html(table))
        return MethodOutcome(history=[record], ledger=ledger, model_state=state, summary=summary,
                             participant_rows=[{"participant": client, "train_samples": len(self.client_train),
                                                "test_samples": len(self.client_test)}])

    def serve(self, grid: Any, checkpoint: "RunCheckpoint | None" = None) -> "ServerResult":
        """The cloud's side on any grid: compress, ask for scores, select, label, train, send the model
        down for the client's own test; the record, the final model and the summary as artefacts."""
        import time

        import numpy as np

        from cotrain.data.base import ArrayDataset
        from cotrain.models import build_model
        from cotrain.runtime.job import ServerResult
        from cotrain.sampling.cloud import prepare_cloud
        from cotrain.sampling.protocol import evaluate_at_client, run_ecos
        from cotrain.seeding import derive_seed

        t0, cfg, seed = time.perf_counter(), self.cfg, self.cfg.run.seed
        (client,) = grid.participant_ids()
        result = _resumed(checkpoint, grid)
        if result is None:
            cloud = prepare_cloud(self.pool_x, self.settings, seed=derive_seed(seed, "ecos-cloud"))
            result = run_ecos(grid, cloud, self.settings, client=client)
            if checkpoint is not None:  # the scores are released once: a resumed run must not ask again
                checkpoint.save(0, grid.ledger, {"ecos": _result_state(result)})
        picked = np.asarray(result.indices)
        labelled = ArrayDataset(x=self.pool_x[picked], y=self.pool_y[picked], num_classes=self.client_train.num_classes)
        train = self.client_train
        model = build_model(cfg.model.name, input_shape=train.input_shape, num_classes=train.num_classes,
                            seed=derive_seed(seed, "init"), **cfg.model.options)
        stats = self._train(model, labelled, seed)
        accuracy = evaluate_at_client(grid, model, client=client, model_name=cfg.model.name,
                                      options=dict(cfg.model.options), round=10)
        ledger = grid.ledger
        epsilon = None if math.isinf(result.epsilon) else result.epsilon
        record = ExperimentRound(round=1, test_accuracy=accuracy, test_loss=None,  # only accuracy leaves the client
                                 seconds=time.perf_counter() - t0,
                                 bytes_up=ledger.total_bytes(direction="up"),
                                 bytes_down=ledger.total_bytes(direction="down"), participants=[client],
                                 extra={"epsilon": epsilon}).to_json()
        composition = {name: int((self.pool_source[picked] == i).sum()) for i, name in enumerate(self.sources)}
        summary = {"budget": self.settings.budget, "k": self.settings.k, "rule": self.settings.rule,
                   "ecos_epsilon": epsilon, "ecos_delta": result.delta,
                   "selection_by_source": composition, "bytes_encoder": result.bytes_encoder,
                   "bytes_centroids": result.bytes_centroids, "bytes_scores": result.bytes_scores,
                   "client_test_accuracy": accuracy, "train": stats}
        clusters = [{"cluster": int(j), "exact": None, "noisy": round(float(result.noisy_scores[j]), 2),
                     "allocated": int(result.allocation.counts[j])} for j in np.argsort(-result.noisy_scores)[:20]]
        coverage = {"noisy": [round(float(v), 4) for v in result.noisy_scores],
                    "allocated": [int(c) for c in result.allocation.counts]}
        return ServerResult([record], dict(model.state_dict()), {"summary": summary, "clusters": clusters,
                                                                 "coverage": coverage})

    def _train(self, model: Any, labelled: Any, seed: int) -> dict[str, Any]:
        from cotrain.sampling.fixmatch import train_fixmatch, train_supervised

        s = self.cfg.ecos
        if s.trainer == "fixmatch":
            out = train_fixmatch(model, labelled, self.pool_x, steps=s.train_steps, batch_size=s.batch_size,
                                 lr=s.lr, seed=seed)
        else:
            out = train_supervised(model, labelled, steps=s.train_steps, batch_size=s.batch_size, lr=s.lr, seed=seed)
        return {k: v for k, v in out.items() if isinstance(v, (int, float, str))}
