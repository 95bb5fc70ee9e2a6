"""The ``[audit]`` section of a FedSGD run: attack chosen uploads, score them, add a leakage section.

Wiring: the section registers itself; the FedAvg method calls ``observers = audit_observers(cfg,
participants, aux)``, ``run_fedavg(..., observers=observers)``, then ``finish_audit(ctx, observers)``.

The observer is the curious server: the attack gets the upload, the shared model and the server's
auxiliary data (the experiment's held-out split). ``truth(pid)`` — the participant's last batch,
kept by the experiment — is used only for scoring, after the attack has returned.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from pydantic import Field, field_validator

from cotrain.audit.api import audit_upload, auxiliary_sample, server_knowledge
from cotrain.audit.convergence import STOP_RULES
from cotrain.audit.feature_reconstruction import ReconstructionSettings
from cotrain.audit.scoring import attribute_accuracy, match, proportion_error
from cotrain.audit.threat_model import ObservedUpload
from cotrain.data.base import ArrayDataset
from cotrain.experiment.section import Section, register_section
from cotrain.federated.records import TrainResult
from cotrain.models.blocks import BlockModel

Truth = Callable[[str], tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]]


@register_section("audit")
class AuditSection(Section):
    """``[audit]``: which uploads the curious server attacks and how hard."""

    enabled: bool = False
    rounds: list[int] = Field(default_factory=lambda: [1])
    participants: list[str] = Field(default_factory=list, description="empty: every sampled participant")
    attribute: str | None = None
    aux_samples: int = Field(1000, ge=10)
    steps: int = Field(500, ge=0)
    time_limit_s: float = Field(30.0, gt=0)
    stop: str = Field("auto", description=(
        "when a restart stops: 'tolerance', 'relative_change' or 'auto' (relative_change where the prior "
        "term is on); see cotrain.audit.convergence"))
    rel_tol: float = Field(1e-3, ge=0, description="relative_change: least relative fall of the best objective "
                           "over its window of steps")

    @field_validator("stop")
    @classmethod
    def _known_stop_rule(cls, v: str) -> str:
        if v != "auto" and v not in STOP_RULES:
            raise ValueError(f"must be 'auto' or one of {', '.join(STOP_RULES.names())}")
        return v


class AuditObserver:
    """A ``run_fedavg`` observer running the audit on chosen uploads and keeping scored rows."""

    def __init__(self, section: AuditSection, aux: ArrayDataset, truth: Truth, *, seed: int = 0) -> None:
        self.section = section
        self.aux = aux
        self.truth = truth
        self.seed = seed
        self.rows: list[dict[str, Any]] = []
        self.points: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (features, attribute, is_rebuilt)
        self.current_round = 0

    def __call__(self, round: int, results: dict[str, TrainResult], model: BlockModel) -> None:
        self.current_round = round
        if round not in self.section.rounds:
            return
        settings = ReconstructionSettings(steps=self.section.steps, time_limit=self.section.time_limit_s,
                                          stop=self.section.stop, rel_tol=self.section.rel_tol, seed=self.seed)
        knowledge = None
        for pid, result in results.items():
            if result.kind != "gradient" or (self.section.participants and pid not in self.section.participants):
                continue
            upload = ObservedUpload.from_train_result(result, model, participant_id=pid, round=round)
            if knowledge is None:
                knowledge = server_knowledge(upload.shared_model(model), self.aux, self.section.attribute,
                                             max_samples=self.section.aux_samples, seed=self.seed)
            res = audit_upload(model, upload, self.aux, attribute=self.section.attribute, settings=settings,
                               knowledge=knowledge)
            self._score(pid, round, model, res)

    def state_dict(self) -> dict[str, Any]:
        """What the audit found so far, as tensors and plain values (for a run's checkpoint)."""
        import json

        return {"rows": json.loads(json.dumps(self.rows)), "current_round": self.current_round,
                "points": [[torch.from_numpy(np.array(a)) for a in p] for p in self.points]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows, self.current_round = list(state["rows"]), int(state["current_round"])
        self.points = [(f.numpy(), a.numpy(), r.numpy()) for f, a, r in state["points"]]

    @torch.no_grad()
    def _score(self, pid: str, round: int, model: BlockModel, res: Any) -> None:
        x, _, attrs = self.truth(pid)  # experiment side only, after the attack
        model.eval()
        true_x, true_e = model.features(x, model.num_blocks - 1), model.features(x)
        m_e = match(res.embeddings, true_e)
        row: dict[str, Any] = {"round": round, "participant": pid, "batch_size": len(x),
                               "success_rate_block_input": match(res.features, true_x).success_rate,
                               "success_rate_embedding": m_e.success_rate, "mean_cosine_embedding": m_e.mean_cosine,
                               "equations_per_unknown": round_(res.equations_per_unknown)}
        a = self.section.attribute
        if a is not None and res.attribute_predictions is not None:
            values = int(max(int(self.aux.attributes[a].max()), int(attrs[a].max()))) + 1
            row["attribute_accuracy"] = attribute_accuracy(res.attribute_predictions, attrs[a], m_e)
            row["majority_accuracy"] = attribute_accuracy(np.full(len(x), self._majority(a)), attrs[a])
            row["proportion_error"] = proportion_error(res.attribute_proportion, attrs[a], values)
            self.points.append((true_e.numpy(), attrs[a].numpy(), np.zeros(len(x), dtype=bool)))
            self.points.append((res.embeddings.numpy(), res.attribute_predictions, np.ones(len(x), dtype=bool)))
        self.rows.append(row)

    def _majority(self, attribute: str) -> int:
        """The server's majority guess: the most common value of its auxiliary samples (the
        baseline an attribute accuracy is read against; the classifier is fitted on the same samples)."""
        idx = auxiliary_sample(self.aux, max_samples=self.section.aux_samples, seed=self.seed)
        return int(torch.bincount(self.aux.attributes[attribute][idx].long()).argmax())


def round_(v: float) -> float:
    return float(f"{v:.4g}")


def tsne_png(points: list[tuple[np.ndarray, np.ndarray, np.ndarray]], path: Path, *,
             attribute: str | None = None) -> Path | None:
    """t-SNE of true (dots) and rebuilt (crosses) E(X), coloured by attribute (the document's Fig. 1)."""
    if not points:
        return None
    from matplotlib.figure import Figure  # no pyplot, no backend switch
    from sklearn.manifold import TSNE

    feats = np.concatenate([p[0].reshape(len(p[0]), -1) for p in points])
    attr = np.concatenate([p[1] for p in points])
    rebuilt = np.concatenate([p[2] for p in points])
    emb = TSNE(n_components=2, perplexity=min(30.0, max(2.0, len(feats) / 4)), random_state=0).fit_transform(feats)
    fig = Figure(figsize=(5, 4))
    ax = fig.subplots()
    lo, hi = float(attr.min()), float(attr.max())
    dots = None
    for flag, marker, label in ((False, "o", "true"), (True, "x", "rebuilt")):
        sel = rebuilt == flag
        dots = ax.scatter(emb[sel, 0], emb[sel, 1], c=attr[sel], cmap="coolwarm", vmin=lo, vmax=hi, marker=marker,
                          s=14, label=label)
    ax.legend(fontsize=7, title="marker")
    if dots is not None:  # the colours' key: the attribute's values (the legend above keys the markers)
        values = np.unique(attr)
        bar = fig.colorbar(dots, ax=ax, ticks=values if len(values) <= 10 else None)
        bar.set_label(f"attribute: {attribute}" if attribute else "attribute")
    ax.set_title("E(X): true vs rebuilt, coloured by attribute")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def add_leakage_section(report: Any, observer: AuditObserver, run_dir: Path) -> None:
    """Add the "Leakage" table (and t-SNE picture) to the run's report; write ``audit.json``."""
    import json

    if not observer.rows:
        return
    (run_dir / "audit.json").write_text(json.dumps({"results": observer.rows}, indent=2) + "\n")
    report.add_table("Leakage (gradient audit)", observer.rows)
    png = tsne_png(observer.points, run_dir / "audit_tsne.png", attribute=observer.section.attribute)
    if png is not None:
        report.add_image("Leakage: features by attribute", png,
                         caption="t-SNE of true (dots) and reconstructed (crosses) features")


def audit_observers(cfg: Any, participants: dict[str, Any], aux: ArrayDataset) -> list[AuditObserver]:
    """The observers of an in-process FedSGD run (empty unless ``[audit] enabled = true``).

    ``aux`` is the server's own data (the experiment's held-out split); the truth of a participant's
    upload is its last mini-batch, read from the participant object for scoring only.
    """
    section: AuditSection = cfg.audit
    if not section.enabled:
        return []
    if cfg.fedavg.upload != "gradient":
        raise ValueError("audit: the gradient audit reads FedSGD uploads; set [fedavg] upload = \"gradient\"")
    check_audit_targets(section, aux, n_participants=cfg.data.participants)

    def truth(pid: str) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        p = participants[pid]
        idx = p.last_batch_indices
        return p.train_data.x[idx], p.train_data.y[idx], {k: v[idx] for k, v in p.train_data.attributes.items()}

    return [AuditObserver(section, aux, truth, seed=int(cfg.run.seed))]


def check_audit_targets(section: AuditSection, aux: ArrayDataset, *, n_participants: int) -> None:
    """:class:`ConfigError` for an attribute the data lacks or a participant that does not exist."""
    from cotrain.errors import ConfigError
    from cotrain.experiment.setup import participant_id

    if section.attribute is not None and section.attribute not in aux.attributes:
        raise ConfigError(f"audit.attribute: the data set has no attribute {section.attribute!r}; it has: "
                          f"{', '.join(sorted(aux.attributes)) or 'none'}", key="audit.attribute")
    ids = {participant_id(i) for i in range(n_participants)}
    unknown = sorted(set(section.participants) - ids)
    if unknown:
        raise ConfigError(f"audit.participants: no participant {', '.join(unknown)}; they are "
                          f"{participant_id(0)} .. {participant_id(n_participants - 1)}", key="audit.participants")


def replayed_audit_observers(cfg: Any, data: Any, aux: ArrayDataset) -> list[AuditObserver]:
    """The observers of a FedSGD run whose participants live elsewhere (Flower): the experiment
    rebuilds each participant's data and the seeded batch it uploaded, for scoring only."""
    from cotrain.experiment.setup import build_fedavg_participant, participant_id

    if not cfg.audit.enabled:
        return []
    index = {participant_id(i): i for i in range(len(data.parts))}

    def truth(pid: str) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        p = build_fedavg_participant(cfg, index[pid], data)
        idx = p.gradient_batch(observer.current_round, cfg.fedavg.batch_size)
        d = p.train_data
        return d.x[idx], d.y[idx], {k: v[idx] for k, v in d.attributes.items()}

    observer = AuditObserver(cfg.audit, aux, truth, seed=int(cfg.run.seed))
    return [observer]


def observers_to_json(observers: list[AuditObserver]) -> dict[str, Any]:
    """What the observers found, as JSON (a Flower server hands it back as an artefact)."""
    return {"audit": [{"rows": o.rows, "points": [[a.tolist(), b.tolist(), c.tolist()] for a, b, c in o.points]}
                      for o in observers]}


def observers_from_json(cfg: Any, artifacts: dict[str, Any]) -> list[AuditObserver]:
    """Observers holding what a remote server's observers found (for :func:`finish_audit`)."""
    out = []
    for d in artifacts.get("audit", []):
        o = AuditObserver(cfg.audit, None, lambda pid: None, seed=int(cfg.run.seed))  # type: ignore[arg-type]
        o.rows = list(d["rows"])
        o.points = [(np.asarray(a), np.asarray(b), np.asarray(c, dtype=bool)) for a, b, c in d["points"]]
        out.append(o)
    return out


def finish_audit(ctx: Any, observers: list[AuditObserver]) -> dict[str, Any]:
    """Add the leakage sections to the report; return summary keys (mean success / attribute accuracy)."""
    out: dict[str, Any] = {}
    for obs in observers:
        add_leakage_section(ctx.report, obs, ctx.run_dir)
        if obs.rows:
            out["audit_success_rate_embedding"] = float(np.mean([r["success_rate_embedding"] for r in obs.rows]))
            acc = [r["attribute_accuracy"] for r in obs.rows if "attribute_accuracy" in r]
            if acc:
                out["audit_attribute_accuracy"] = float(np.mean(acc))
            majority = [r["majority_accuracy"] for r in obs.rows if "majority_accuracy" in r]
            if majority:
                out["audit_majority"] = float(np.mean(majority))
    return out


def audit_config_for(run_dir: Path, *, rounds: list[int] | None = None, attribute: str | None = None,
                     participants: list[str] | None = None) -> Any:
    """The config of ``cotrain audit RUN_DIR``: the saved run's config, replayed with ``[audit]`` on.

    Uploads are not stored in a run folder; a run is a function of its config and seed, so
    replaying it re-creates exactly the uploads the server received, and the curious server
    observes them. The replay is written beside the original as ``<name>-audit``.
    """
    from cotrain.experiment.config import load_config, with_overrides
    from cotrain.experiment.errors import ConfigError

    path = Path(run_dir) / "config.toml"
    if not path.is_file():
        raise ConfigError(f"{run_dir}: not a run folder (no config.toml)", key="run_dir")
    cfg = load_config(path)
    overrides: dict[str, Any] = {"audit.enabled": True, "run.name": f"{cfg.run.name}-audit",
                                 "run.output_dir": str(Path(run_dir).resolve().parent)}
    if rounds:
        overrides["audit.rounds"] = list(rounds)
    if attribute:
        overrides["audit.attribute"] = attribute
    if participants:
        overrides["audit.participants"] = list(participants)
    return with_overrides(cfg, overrides)
