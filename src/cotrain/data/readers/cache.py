"""A small on-disk cache of decoded arrays (for readers that decode thousands of image files).

The cache folder is ``$COTRAIN_CACHE`` when set, else ``~/.cache/cotrain``. An entry is one
``.npz`` whose name carries a hash of everything the arrays depend on (source files with their
sizes and modification times, and the reader options), so a changed source is re-decoded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

CACHE_ENV = "COTRAIN_CACHE"
log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """The cache folder (not created here)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "cotrain"


def files_fingerprint(paths: Iterable[Path]) -> str:
    """A hash of the names, sizes and modification times of ``paths``."""
    h = hashlib.sha256()
    for p in paths:
        st = p.stat()
        h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def cached_arrays(
    prefix: str,
    key: dict[str, Any],
    build: Callable[[], dict[str, np.ndarray]],
    *,
    enabled: bool = True,
) -> dict[str, np.ndarray]:
    """Return ``build()``'s arrays, read from or written to the cache entry for ``key``.

    ``key`` must be JSON-serialisable. A cache that cannot be written is skipped with a warning.
    """
    if not enabled:
        return build()
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    path = cache_dir() / f"{prefix}-{digest[:20]}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:  # a half-written or damaged entry
            log.warning("ignoring unreadable cache entry %s: %s", path, err)
    arrays = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except OSError as err:
        log.warning("could not write cache entry %s: %s", path, err)
    return arrays
