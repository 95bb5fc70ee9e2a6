"""A node's own disk cache: what a node builds once, every later process of the node reads back.

Flower's deployment engine starts a fresh ClientApp process for every message, so a participant
rebuilt per message would load and partition its data set every time. The runtime opens the
node's cache folder for the process (:func:`use_node_cache`, from the node config's ``cache-dir``)
and the layers above ask :func:`node_cache` for it; without one they build as before. The node's
other settings (e.g. ``data-dir``: where this node keeps the data set) are :func:`node_setting`.

Entries are plain tensors and JSON-like values (``torch.save``, read back with
``weights_only=True``, so a cache file cannot run code), written to a temporary file and renamed,
so a reader never sees half an entry.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

log = logging.getLogger(__name__)


class NodeCache:
    """Entries by key in ``folder`` (created on first write)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def path(self, key: str) -> Path:
        return self.folder / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.pt"

    def get_or_build(self, key: str, build: Callable[[], Any]) -> Any:
        """The entry for ``key``; built with ``build()`` and stored when the folder lacks it."""
        path = self.path(key)
        if path.exists():
            try:
                return torch.load(path, weights_only=True)
            except Exception as err:  # noqa: BLE001 - a damaged entry is rebuilt, not fatal
                log.warning("node cache entry %s unreadable (%s); rebuilding it", path, err)
        value = build()
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        torch.save(value, tmp)
        os.replace(tmp, path)
        return value


_current: NodeCache | None = None
_settings: dict[str, str] = {}


def node_cache() -> NodeCache | None:
    """This process's node cache, or None when the runtime opened none."""
    return _current


def node_setting(name: str) -> str | None:
    """A setting of the node this process serves (a Flower node config entry, e.g. ``data-dir``)."""
    return _settings.get(name)


@contextlib.contextmanager
def use_node_cache(folder: str | Path | None, settings: dict[str, str] | None = None) -> Iterator[NodeCache | None]:
    """Make ``folder`` this process's node cache (None: no cache) and ``settings`` its node's
    settings while the block runs."""
    global _current, _settings
    previous = _current, _settings
    _current, _settings = (NodeCache(folder) if folder else None), dict(settings or {})
    try:
        yield _current
    finally:
        _current, _settings = previous
