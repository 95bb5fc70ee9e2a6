"""The :class:`Aggregator` contract and its registry.

A rule is a class registered by name with keyword-only, validated options::

    @register_aggregator("trimmed_mean")
    class TrimmedMean(Aggregator):
        def __init__(self, *, beta: float = 0.1) -> None: ...
        def combine(self, updates, weights, ids, context) -> Combined: ...

``build_aggregator("trimmed_mean", beta=0.1)`` checks the options against the signature (an
unknown key is an :class:`~cotrain.errors.OptionsError` naming the accepted ones) before building.

Rules see the round's uploads as one float64 matrix (one row a participant, every floating tensor
flattened in upload order) so that a rule is its maths and nothing else. With ``on_updates = True``
(the default; robust rules work on updates) the server's reference state is subtracted first and
added back after, so a rule sees the participants' updates ``x_k - x_global``; translation-
equivariant rules set it False and see the uploads as sent (FedAvg stays bit-identical to a plain
weighted mean). Integer tensors (BatchNorm's batch counter) take the first upload's value.

An aggregator may keep state across rounds on ``self`` (centered clipping's momentum, a credit
history); the server builds one per run.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import Any, Callable, ClassVar, Mapping, Sequence, TypeVar

import torch

from cotrain.aggregation.records import Aggregate, Tensors, Upload
from cotrain.errors import CotrainError
from cotrain.registry import Registry, check_options, import_all


class AggregationError(CotrainError, ValueError):
    """A round's inputs do not fit the rule (too few uploads for its ``f``, no server upload for FLTrust)."""


@dataclass(frozen=True)
class RoundContext:
    """What a rule knows of the round besides the uploads.

    Attributes:
        round: the round number (1-based).
        reference: the global state the uploads started from (None: the uploads are gradients or
            there is no common start, e.g. FedSGD).
        seed: a seed for this rule in this round (derived from the root seed by the server).
        groups: participant -> user group, when the server grouped the uploads.
        server_upload: what the server itself would upload this round, trained from the same
            start on its own root set with the participants' local settings (FLTrust); in the space
            of the uploads (parameters, or a gradient), so the reference is subtracted from it as
            from every upload. None when the server has no root set.
        server_row: ``server_upload`` flattened like the rows :meth:`Aggregator.combine` sees
            (filled in by :meth:`Aggregator.aggregate`; rules read this one).
    """

    round: int
    reference: Tensors | None = None
    seed: int = 0
    groups: Mapping[str, int] = field(default_factory=dict)
    server_upload: Tensors | None = None
    server_row: torch.Tensor | None = None


@dataclass
class Combined:
    """A rule's answer on the flattened uploads: one row vector and the per-participant bookkeeping."""

    vector: torch.Tensor
    weights: dict[str, float] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    excluded: list[str] = field(default_factory=list)
    info: dict[str, float] = field(default_factory=dict)


class Aggregator(ABC):
    """An aggregation rule. Subclasses implement :meth:`combine`; options are keyword-only ``__init__`` args."""

    name: ClassVar[str] = ""
    on_updates: ClassVar[bool] = True
    # True: the server must train on its root set and pass ``server_upload`` (FLTrust). Read it on
    # the instance: a pre-aggregator (bucketing) sets it from the rule it wraps.
    needs_server_upload: ClassVar[bool] = False

    @abstractmethod
    def combine(self, updates: torch.Tensor, weights: torch.Tensor, ids: list[str],
                context: RoundContext) -> Combined:
        """``updates``: (n, d) float64, one row per participant in ``ids`` order; ``weights``: (n,) float64 > 0."""

    def options(self) -> dict[str, Any]:
        """The options this rule was built with (for the summary)."""
        return dict(getattr(self, "_options", {}))

    def state_dict(self) -> dict[str, Any]:
        """What the rule keeps on ``self`` across rounds, for a checkpoint: every attribute holding
        tensors or plain values (a wrapped rule's, recursively). A rule keeping other objects
        across rounds overrides this and :meth:`load_state_dict`."""
        return {k: v.state_dict() if isinstance(v, Aggregator) else v for k, v in vars(self).items()
                if isinstance(v, Aggregator) or _plain(v)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` gave."""
        for k, v in state.items():
            current = getattr(self, k, None)
            if isinstance(current, Aggregator):
                current.load_state_dict(v)
            else:
                setattr(self, k, v)

    def __call__(self, uploads: Sequence[Upload], *, round: int = 1, reference: Tensors | None = None,
                 seed: int = 0, server_upload: Tensors | None = None) -> Aggregate:
        return self.aggregate(uploads, RoundContext(round=round, reference=reference, seed=seed,
                                                     groups={u.participant: u.group for u in uploads
                                                             if u.group is not None},
                                                     server_upload=server_upload))

    def aggregate(self, uploads: Sequence[Upload], context: RoundContext) -> Aggregate:
        """Flatten, (subtract the reference), :meth:`combine`, (add it back), unflatten."""
        check_uploads(uploads)
        ids = [u.participant for u in uploads]
        reference = context.reference if self.on_updates else None
        matrix, layout = flatten([u.tensors for u in uploads], reference=reference)
        weights = torch.tensor([float(u.weight) for u in uploads], dtype=torch.float64)
        if context.server_upload is not None:
            check_uploads([uploads[0], Upload("server", context.server_upload)])
            server, _ = flatten([uploads[0].tensors, context.server_upload], reference=reference)
            context = replace(context, server_row=server[1])
        out = self.combine(matrix, weights, ids, context)
        tensors = unflatten(out.vector, layout, first=uploads[0].tensors, reference=reference)
        return Aggregate(tensors=tensors, weights=out.weights, scores=out.scores,
                         excluded=sorted(out.excluded), info=out.info)


def _plain(value: Any) -> bool:
    """A tensor, a number, a string, None, or a list / tuple / dict of them."""
    if value is None or isinstance(value, (torch.Tensor, bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


# -- flattening ------------------------------------------------------------------------------
Layout = list[tuple[str, torch.Size, torch.dtype]]


def floating_names(tensors: Tensors) -> list[str]:
    return [name for name, t in tensors.items() if t.is_floating_point()]


def flatten(uploads: Sequence[Tensors], *, reference: Tensors | None = None) -> tuple[torch.Tensor, Layout]:
    """(n, d) float64 of every floating tensor, in the first upload's order; minus ``reference`` if given."""
    first = uploads[0]
    layout: Layout = [(n, first[n].shape, first[n].dtype) for n in floating_names(first)]
    rows = []
    for u in uploads:
        parts = [u[n].detach().reshape(-1).to(torch.float64) for n, _, _ in layout]
        if reference is not None:
            parts = [p - reference[n].detach().reshape(-1).to(torch.float64) for p, (n, _, _) in zip(parts, layout)]
        rows.append(torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64))
    return torch.stack(rows), layout


def unflatten(vector: torch.Tensor, layout: Layout, *, first: Tensors,
              reference: Tensors | None = None) -> dict[str, torch.Tensor]:
    """Inverse of :func:`flatten` for one row; integer tensors are copied from ``first``."""
    floats: dict[str, torch.Tensor] = {}
    offset = 0
    for name, shape, dtype in layout:
        n = shape.numel()
        piece = vector[offset:offset + n].reshape(shape)
        if reference is not None:
            piece = piece + reference[name].detach().to(torch.float64)
        floats[name] = piece.to(dtype)
        offset += n
    return {name: floats[name] if name in floats else t.clone() for name, t in first.items()}


def check_uploads(uploads: Sequence[Upload]) -> None:
    if len(uploads) == 0:
        raise ValueError("nothing to aggregate: no uploads")
    names = list(uploads[0].tensors)
    for u in uploads[1:]:
        if list(u.tensors) != names and set(u.tensors) != set(names):
            raise ValueError(f"upload of {u.participant!r} carries tensors {sorted(u.tensors)}, "
                             f"expected {sorted(names)}")
        for name in names:
            if u.tensors[name].shape != uploads[0].tensors[name].shape:
                raise ValueError(f"upload of {u.participant!r}: tensor {name!r} has shape "
                                 f"{tuple(u.tensors[name].shape)}, expected {tuple(uploads[0].tensors[name].shape)}")


# -- registry ------------------------------------------------------------------------------
def _load_builtin() -> None:
    import cotrain.aggregation.rules as rules

    import_all(rules)  # every module of the package registers its rule: a new rule is one new file


AGGREGATORS: Registry[type[Aggregator]] = Registry("aggregator", loader=_load_builtin)
A = TypeVar("A", bound=type[Aggregator])


def register_aggregator(name: str) -> Callable[[A], A]:
    """Class decorator: ``@register_aggregator("median")``."""

    def add(cls: A) -> A:
        cls.name = name
        AGGREGATORS.add(name, cls)
        return cls

    return add


def available_aggregators() -> list[str]:
    return AGGREGATORS.names()


def _no_options() -> None:
    """A rule without options."""


def build_aggregator(name: str, **options: Any) -> Aggregator:
    """The rule ``name`` built with ``options`` (checked against its keyword-only arguments first)."""
    cls = AGGREGATORS.get(name)
    if cls.__init__ is object.__init__:
        check_options(_no_options, options, f"aggregator {name!r}")
    check_options(cls.__init__, options, f"aggregator {name!r}")
    agg = cls(**options)
    agg._options = dict(options)  # type: ignore[attr-defined]
    return agg
