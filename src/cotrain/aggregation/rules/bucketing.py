"""Bucketing, a pre-aggregator (Karimireddy, He, Jaggi, "Byzantine-Robust Learning on
Heterogeneous Datasets via Bucketing", ICLR 2022, Algorithm 1).

Shuffle the n uploads with a random permutation pi (drawn from the round's seed), cut them into
ceil(n / s) buckets of s consecutive uploads (the last one may be smaller) and give the inner rule
the bucket means y_b = (1 / |B_b|) sum_{i in B_b} x_{pi(i)}, one row (d,) per bucket. Averaging s
uploads shrinks the honest spread by about sqrt(s) under non-IID data, so the inner robust rule
tells honest from Byzantine more easily (the paper pairs it with Krum, RFA and centered clipping).
ByzFL's ``Bucketing(s)`` is the same map with its own (global-RNG) permutation.

The inner rule sees bucket ids ``bucket0``, ``bucket1``, ... with weight = the sum of its members'
weights. Back on participants: a member's score is its bucket's score, the members of an excluded
bucket are excluded, and a member's weight is its bucket's weight / |B_b|. ``info["bucket_of:<id>"]``
records the bucket of each participant. An inner rule with state (centered clipping) keeps it here.
"""

from __future__ import annotations

from typing import Any

import torch

from cotrain.aggregation.base import Aggregator, Combined, RoundContext, register_aggregator
from cotrain.aggregation.rules._common import inner_rule, int_option
from cotrain.seeding import derive_seed, numpy_rng


@register_aggregator("bucketing")
class Bucketing(Aggregator):
    """Means of seeded random buckets of ``bucket_size`` uploads, fed to an inner rule.

    Args:
        bucket_size: s >= 1, the uploads per bucket (s = 1 only shuffles).
        rule: the inner rule's registered name.
        options: the inner rule's options (checked as ``build_aggregator(rule, **options)`` does).
    """

    def __init__(self, *, bucket_size: int = 2, rule: str = "geometric_median",
                 options: dict[str, Any] | None = None) -> None:
        self.bucket_size = int_option("bucketing", "bucket_size", bucket_size, minimum=1)
        self.inner = inner_rule("bucketing", rule, options)
        self.needs_server_upload = self.inner.needs_server_upload  # type: ignore[misc]

    def buckets(self, n: int, context: RoundContext) -> list[list[int]]:
        """The round's buckets as lists of row indices (the permutation's stream: seed, round)."""
        order = numpy_rng(context.seed, "bucketing", context.round).permutation(n).tolist()
        s = self.bucket_size
        return [order[i:i + s] for i in range(0, n, s)]

    def combine(self, updates: torch.Tensor, weights: torch.Tensor, ids: list[str],
                context: RoundContext) -> Combined:
        buckets = self.buckets(updates.shape[0], context)
        means = torch.stack([updates[b].mean(dim=0) for b in buckets])
        mass = torch.stack([weights[b].sum() for b in buckets])
        names = [f"bucket{k}" for k in range(len(buckets))]
        inner_context = RoundContext(round=context.round, reference=context.reference,
                                     seed=derive_seed(context.seed, "bucketing", "inner"),
                                     server_upload=context.server_upload, server_row=context.server_row)
        out = self.inner.combine(means, mass, names, inner_context)
        scores, weights_out, excluded = {}, {}, []
        info = {f"inner:{key}": value for key, value in out.info.items()}
        for b, (name, members) in enumerate(zip(names, buckets)):
            for i in members:
                pid = ids[i]
                info[f"bucket_of:{pid}"] = float(b)
                if name in out.scores:
                    scores[pid] = out.scores[name]
                if name in out.weights:
                    weights_out[pid] = out.weights[name] / len(members)
                if name in out.excluded:
                    excluded.append(pid)
        return Combined(out.vector, weights=weights_out, scores=scores, excluded=excluded, info=info)
