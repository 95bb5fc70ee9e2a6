"""One registry type behind every extension point (models, data sets, partitioners, aggregators,
methods, attacks, defences, config sections).

>>> AGG = Registry("aggregator")
>>> @AGG.register("mean")
... def mean(xs): return sum(xs) / len(xs)
>>> AGG.get("mean")([1, 3])
2.0

Unknown names and unknown options are :class:`~cotrain.errors.UnknownNameError` /
:class:`~cotrain.errors.OptionsError`, each one line in the same format.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Generic, Iterator, TypeVar

from cotrain.errors import OptionsError, UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind. ``kind`` is the word used in messages (``"aggregator"``)."""

    def __init__(self, kind: str, *, loader: Callable[[], None] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._loader = loader  # imports the built-in entries on first use (no import-time circles)
        self._loaded = loader is None

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator adding ``obj`` under ``name``; registering a different object twice is an error."""

        def add(obj: T) -> T:
            self.add(name, obj)
            return obj

        return add

    def add(self, name: str, obj: T) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string")
        old = self._entries.get(name)
        if old is not None and old is not obj and _qualname(old) != _qualname(obj):
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = obj

    def remove(self, name: str) -> None:
        """Forget ``name`` (tests that register toys clean up with this)."""
        self._entries.pop(name, None)

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            assert self._loader is not None
            self._loader()

    def get(self, name: str) -> T:
        self._load()
        if name not in self._entries:
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names()) or 'none'}")
        return self._entries[name]

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def check_name(self, name: str) -> str:
        """``name`` if registered, else :class:`UnknownNameError` (for config validators)."""
        self.get(name)
        return name


def _qualname(obj: Any) -> str:
    # re-imports of a module (Flower's app loader, importlib.reload) bring an equal but new object
    return f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', repr(obj))}"


def check_options(func: Callable[..., Any], options: dict[str, Any], what: str) -> None:
    """:class:`OptionsError` naming the accepted options when ``options`` has a key ``func`` does not
    take as a keyword-only argument (options are keyword-only everywhere). Checked against the signature up front, so an error from inside ``func`` is
    never mistaken for a bad option."""
    params = inspect.signature(func).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise OptionsError(f"{what}: unknown option(s) {', '.join(unknown)}; "
                           f"accepted: {', '.join(accepted) or 'none'}")
    required = [n for n in accepted if params[n].default is inspect.Parameter.empty and n not in options]
    if required:  # stated by the user, never defaulted silently (privacy parameters are such options)
        raise OptionsError(f"{what}: missing required option(s) {', '.join(required)}")


def import_all(package: Any) -> None:
    """Import every module of ``package`` (each registers its entries when imported)."""
    import importlib
    import pkgutil

    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{info.name}")
