"""The per-round protocol of federated adversarial domain adaptation (server side).

The patent "Model training method and computing node based on federated transfer learning"
(claims 1-15), ADDA-style alignment (Tzeng et al., CVPR 2017) in which nodes exchange parameters
of G, T and D only. Per round r:

1. each source trains G_s, T_s on its labelled data (round 0: ``pretrain_rounds`` FedAvg rounds of
   plain supervised training from one common initialisation; later rounds: step 5 of round r-1);
2. the G_s go to the aggregating party, which takes
   ``G = sum_s w_s G_s`` (w_s proportional to examples) as the target's G, mixed with the target's
   own G_t with weight ``target_weight`` when the target has one (``target_encoder`` set);
3. each source trains D_s := D_all with G_s, T_s frozen on its features (label "source"); the target
   trains D_t := D_all with G frozen on its features (label "target");
4. ``D_all = 1/2 sum_s (n_s / sum n) D_s + 1/2 D_t``: both domains weigh the same, as in the pooled
   loss of ADDA eq. 7; D_all is sent to every source. Steps 3-4 repeat ``discriminator_exchanges``
   times; with ``discriminator_server_lr`` the aggregate is a FedAdam step rather than the average;
5. each source holds D_all fixed and retrains G_s, T_s on ``CE + lambda * L_conf(D_all(G_s(x_s)), "target")``,
   starting from the aggregates G, T when ``sync_sources`` (the FedAvg step that keeps averaging of
   several sources meaningful; with one source and no target G it changes nothing).

With ``target_encoder`` the target also trains its own G_t against D_all and T (ADDA's target step,
``-log sigmoid(D_all(G_t(x_t)))``) alongside step 5; G_t enters the next step 2.
After the last round the target holds ``G = aggregate(G_s [, G_t])`` and ``T = aggregate(T_s)``.

Two topologies, one code path. The grid is server-centric, so the aggregating party is the server:
``target=TargetNode(...)`` makes the target node itself the server (aggregation at the target; its
local work needs no message); ``target=None`` makes the server a separate aggregator, and the target
is the grid participant ``target_id``. Every other participant is a source node. Either way every
message crosses the grid and lands on its ledger, and only parameters cross.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch

from cotrain.aggregation import Aggregator, Upload, build_aggregator, weighted_mean
from cotrain.federated.checkpoint import NO_CHECKPOINT, RoundHook
from cotrain.models.blocks import BlockModel
from cotrain.runtime.grid import Grid
from cotrain.runtime.message import Message, PayloadKind
from cotrain.seeding import derive_seed
from cotrain.transfer.discriminator import DomainDiscriminator
from cotrain.transfer.nodes import (ADAPT, DISCRIMINATOR, PRETRAIN, TARGET_DISCRIMINATOR, TARGET_ENCODER, LocalPhase,
                                    TargetNode, pack, unpack)

Tensors = dict[str, torch.Tensor]


@dataclass(frozen=True)
class FadaSettings:
    """Rounds and local phases of the protocol (see the module docstring for the maths).

    ``pretrain``: step 1 per pretraining round (``pretrain_rounds=0``: the model given to
    :func:`run_fada` is taken as the sources' step-1 result, e.g. the output of ``fedavg_sources``); ``discriminator``: step 3 at every node;
    ``adapt``: step 5 (``adapt.weight`` is lambda); ``target_encoder``: the target's own G trained as in
    ADDA (None: the target has no G of its own and takes the sources' aggregate).
    ``discriminator_exchanges``: steps 3-4 repeated this many times per round, so that D_all can
    learn from one-domain nodes with few local steps each (little client drift).
    ``discriminator_server_lr``: if set, step 4 is FedAdam (Reddi et al., "Adaptive Federated
    Optimization", ICLR 2021): the aggregating party treats ``D_all_old - aggregate(D)`` as a
    gradient and takes one Adam step (betas 0.5, 0.999, ADDA's) of this rate; with one local SGD
    step of rate 1 per node this is centralised Adam on the pooled loss of ADDA eq. 7.
    """

    rounds: int = 20
    pretrain_rounds: int = 1
    pretrain: LocalPhase = LocalPhase(steps=500, lr=1e-3, beta1=0.9)
    discriminator: LocalPhase = LocalPhase(steps=5)
    adapt: LocalPhase = LocalPhase(steps=20)
    target_encoder: LocalPhase | None = None
    target_weight: float = 0.5
    discriminator_exchanges: int = 1
    discriminator_server_lr: float | None = None
    sync_sources: bool = True

    def __post_init__(self) -> None:
        if self.rounds < 0 or self.pretrain_rounds < 0 or self.rounds + self.pretrain_rounds == 0:
            raise ValueError(f"need rounds, pretrain_rounds >= 0, not both 0; got {self.rounds}, {self.pretrain_rounds}")
        if self.discriminator_exchanges < 1:
            raise ValueError(f"discriminator_exchanges must be >= 1, got {self.discriminator_exchanges}")
        if not 0.0 <= self.target_weight < 1.0:
            raise ValueError(f"target_weight must be in [0, 1), got {self.target_weight}")


@dataclass
class FadaRound:
    """What one round produced, as the aggregating party saw it."""

    round: int
    phase: str
    seconds: float
    bytes_up: int
    bytes_down: int
    source_losses: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    aggregation: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class FadaResult:
    """The target's final model (G = aggregate of the last G_s [and G_t], T = aggregate of T_s)."""

    model: BlockModel
    discriminator: DomainDiscriminator
    history: list[FadaRound]


Evaluator = Callable[[BlockModel], dict[str, float]]


class _Server:
    """The aggregating party: sends to sources (and to a remote target) and aggregates replies."""

    def __init__(self, grid: Grid, settings: FadaSettings, target: TargetNode | None, target_id: str,
                 aggregator: Aggregator, seed: int) -> None:
        self.grid, self.settings, self.target, self.target_id = grid, settings, target, target_id
        ids = grid.participant_ids()
        if target is None and target_id not in ids and settings.rounds > 0:
            raise ValueError(f"aggregator topology: no participant {target_id!r} among {ids}")
        self.sources = [p for p in ids if target is not None or p != target_id]
        if not self.sources:
            raise ValueError("no source nodes are connected")
        self.aggregator, self.seed = aggregator, seed
        self.round = 0
        self.last: dict[str, dict] = {}  # prefix -> the round's aggregation record (weights, scores, excluded)

    def send(self, to_sources: Message, to_target: Message | None, round: int) -> tuple[dict[str, Message], Message | None]:
        messages = {pid: to_sources for pid in self.sources}
        if to_target is not None:
            messages[self.target_id] = to_target
        replies = self.grid.send_and_receive(messages, round=round)
        return {pid: replies[pid] for pid in self.sources}, replies.get(self.target_id)

    def mean(self, replies: Mapping[str, Message], prefix: str) -> Tensors:
        """The configured rule over the sources' uploads of one part (G, T or D)."""
        uploads = [Upload(p, unpack(replies[p].tensors, prefix), weight=float(replies[p].values["num_examples"]))
                   for p in self.sources]
        out = self.aggregator(uploads, round=self.round, seed=derive_seed(self.seed, "aggregation", prefix, self.round))
        for spend in out.spends:
            self.grid.ledger.record_privacy(spend)
        self.last[prefix] = out.to_json()
        return out.tensors

    def mix(self, sources: Tensors, other: Tensors, weight_other: float) -> Tensors:
        """Plain arithmetic, whatever the rule: (1 - w) * sources' aggregate + w * the target's own."""
        return weighted_mean([sources, other], [1.0 - weight_other, weight_other])


def _prefixed(prefix: str, state: Mapping[str, torch.Tensor]) -> Tensors:
    return {f"{prefix}.{k}": v for k, v in state.items()}


def _server_step(module: torch.nn.Module, opt: torch.optim.Optimizer, aggregate: Tensors) -> Tensors:
    """One server optimiser step on ``module`` with pseudo-gradient ``current - aggregate``."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.grad = p.detach() - aggregate[name].to(p.dtype)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _message(kind: str, tensors: Tensors, phase: LocalPhase, round: int, exchange: int = 0) -> Message:
    return Message(kind, tensors=tensors, payload=PayloadKind.PARAMETERS,
                   values={**phase.to_values(round), "exchange": exchange})


def run_fada(grid: Grid, model: BlockModel, discriminator: DomainDiscriminator, settings: FadaSettings, *,
             target: TargetNode | None = None, target_id: str = "target", evaluate: Evaluator | None = None,
             on_round: Callable[[FadaRound], None] | None = None, aggregator: Aggregator | None = None,
             seed: int = 0, checkpoint: RoundHook = NO_CHECKPOINT) -> FadaResult:
    """Run pretraining and ``settings.rounds`` adaptation rounds; ``model`` / ``discriminator`` hold
    the common initialisation on entry and the final aggregates (G, T; D_all) on return.

    ``target``: aggregation at the target (this process is the target node); None: at a separate
    aggregator, the target being the grid participant ``target_id``. ``evaluate`` is the experiment's
    scorer of the aggregate model (it holds ground truth; no node does). ``aggregator`` (default
    ``build_aggregator("fedavg")``) combines the sources' uploads of G, T and D; the target's own G
    and D are mixed in with :func:`weighted_mean` at ``target_weight`` / one half, whatever the rule.
    ``checkpoint`` is told each finished round's state; the last pretraining round ends after the
    aggregates are collected for the first step 3.
    """
    s = settings
    server = _Server(grid, s, target, target_id, aggregator if aggregator is not None else build_aggregator("fedavg"),
                     seed)
    d_server = None
    if s.discriminator_server_lr is not None:
        d_server = torch.optim.Adam(list(discriminator.parameters()), lr=s.discriminator_server_lr, betas=(0.5, 0.999))
    parts = {"model": model, "discriminator": discriminator, "aggregator": server.aggregator,
             "discriminator_server": d_server, "target": target}
    saved = checkpoint.resume(parts)
    history: list[FadaRound] = [FadaRound(**r) for r in saved["history"]] if saved else []
    done = len(history)
    if saved:
        server.last = saved["last"]
    d_state: Tensors | None = None
    g_agg: Tensors | None = None
    t_agg: Tensors | None = None
    g_target: Tensors | None = None  # the target's own G, once it has one

    def values() -> dict:
        return {"history": [r.to_json() for r in history], "d_state": d_state, "g_agg": g_agg, "t_agg": t_agg,
                "g_target": g_target, "last": server.last}

    def record(rnd: int, phase: str, t0: float, up0: int, down0: int, replies: Mapping[str, Message]) -> None:
        metrics = evaluate(model) if evaluate is not None else {}
        rec = FadaRound(rnd, phase, time.perf_counter() - t0, grid.ledger.total_bytes(direction="up") - up0,
                        grid.ledger.total_bytes(direction="down") - down0,
                        {p: float(m.values.get("loss", float("nan"))) for p, m in replies.items()}, metrics,
                        server.last.get("G", {}))
        history.append(rec)
        if on_round is not None:
            on_round(rec)

    # Step 1: pretraining, FedAvg of (G, T) from one common initialisation.
    g_state, t_state = model.blocks.state_dict(), model.head.state_dict()
    replies: dict[str, Message] = {}
    for rnd in range(done + 1, s.pretrain_rounds + 1):
        server.round = rnd
        t0, up0, down0 = time.perf_counter(), grid.ledger.total_bytes(direction="up"), grid.ledger.total_bytes(direction="down")
        tensors = {**_prefixed("G", g_state), **_prefixed("T", t_state)}
        replies, _ = server.send(_message(PRETRAIN, tensors, s.pretrain, rnd), None, rnd)
        g_state, t_state = server.mean(replies, "G"), server.mean(replies, "T")
        model.blocks.load_state_dict(g_state)
        model.head.load_state_dict(t_state)
        record(rnd, "pretrain", t0, up0, down0, replies)
        if rnd < s.pretrain_rounds:
            checkpoint.round_done(rnd, parts, values)

    def collect() -> tuple[Tensors, Tensors]:
        """Step 2: the uploaded G_s (mixed with the target's own G) and T_s aggregated into ``model``."""
        g = server.mean(replies, "G")
        if g_target is not None:
            g = server.mix(g, g_target, s.target_weight)
        t = server.mean(replies, "T")
        model.blocks.load_state_dict(g)
        model.head.load_state_dict(t)
        if target is not None:
            target.set_encoder(g)
        return g, t

    if saved is not None and done >= s.pretrain_rounds:  # resumed after pretraining: its aggregates were saved
        d_state, g_agg, t_agg, g_target = saved["d_state"], saved["g_agg"], saved["t_agg"], saved["g_target"]
    else:
        d_state = {k: v.detach().clone() for k, v in discriminator.state_dict().items()}
        if replies:
            g_agg, t_agg = collect()
            checkpoint.round_done(s.pretrain_rounds, parts, values)
        else:  # no pretraining round: ``model`` is the sources' common step-1 model, sent in the first step 5
            g_agg, t_agg = dict(model.blocks.state_dict()), dict(model.head.state_dict())
            if target is not None:
                target.set_encoder(g_agg)
    for rnd in range(max(done, s.pretrain_rounds) + 1, s.pretrain_rounds + s.rounds + 1):
        server.round = rnd
        t0, up0, down0 = time.perf_counter(), grid.ledger.total_bytes(direction="up"), grid.ledger.total_bytes(direction="down")
        # Steps 3-4, ``discriminator_exchanges`` times: every node trains its D from D_all with its
        # G frozen (the target's G is G_agg); D_all is their aggregate, both domains weighing the same.
        d_replies: dict[str, Message] = {}
        for ex in range(s.discriminator_exchanges):
            d_all_msg = _prefixed("D", d_state)
            to_target = None
            if target is not None:
                d_target = target.train_discriminator(d_state, s.discriminator, rnd, exchange=ex)
            else:
                to_target = _message(TARGET_DISCRIMINATOR, {**_prefixed("G", g_agg), **d_all_msg}, s.discriminator,
                                     rnd, exchange=ex)
            d_replies, t_reply = server.send(_message(DISCRIMINATOR, d_all_msg, s.discriminator, rnd, exchange=ex),
                                             to_target, rnd)
            if t_reply is not None:
                d_target = unpack(t_reply.tensors, "D")
            d_state = server.mix(server.mean(d_replies, "D"), d_target, 0.5)
            if d_server is not None:
                d_state = _server_step(discriminator, d_server, d_state)
        discriminator.load_state_dict(d_state)
        # Step 5 (and the target's own encoder step, when it has one).
        adapt_tensors = _prefixed("D", d_state)
        if s.sync_sources or (s.pretrain_rounds == 0 and rnd == 1):
            adapt_tensors.update({**_prefixed("G", g_agg), **_prefixed("T", t_agg)})
        to_target = None
        if s.target_encoder is not None:
            if target is not None:
                g_target = target.train_encoder(d_state, t_agg, s.target_encoder, rnd)
            else:
                to_target = _message(TARGET_ENCODER, {**_prefixed("D", d_state), **_prefixed("T", t_agg)},
                                     s.target_encoder, rnd)
        replies, t_reply = server.send(_message(ADAPT, adapt_tensors, s.adapt, rnd), to_target, rnd)
        if t_reply is not None:
            g_target = unpack(t_reply.tensors, "G")
        # Step 2 of the next round: aggregate what came back.
        g_agg, t_agg = collect()
        record(rnd, "adapt", t0, up0, down0, replies)
        checkpoint.round_done(rnd, parts, values)
    return FadaResult(model=model, discriminator=discriminator, history=history)


def final_parameters(result: FadaResult) -> Tensors:
    """The final G and T as named tensors ``G.*``, ``T.*`` (what the target keeps)."""
    return {**pack("G", result.model.blocks), **pack("T", result.model.head)}


