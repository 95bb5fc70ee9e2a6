"""Named data sets: registration, data-directory resolution and loading.

A reader registers itself with :func:`register_dataset`; users call :func:`load_dataset` by name
and :func:`available_datasets` to see which data sets are on disk.

The data directory is, in this order: the ``data_dir`` argument, the ``COTRAIN_DATA`` environment
variable, ``../shared/data`` relative to the working directory (when it exists), and
``~/.cotrain/data``. A data set with files lives in its own sub-folder (e.g. ``<data dir>/mnist``);
``data_dir`` may also point straight at that sub-folder.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from cotrain.data.base import DatasetSplits
from cotrain.errors import CotrainError
from cotrain.registry import Registry, check_options

Loader = Callable[..., DatasetSplits]
SizeProbe = Callable[[Path], tuple[int, int]]

DATA_ENV = "COTRAIN_DATA"
GET_DATA_HINT = f"set {DATA_ENV} or pass data_dir"


class DatasetNotFoundError(CotrainError, FileNotFoundError):
    """A data set's files are not where they were looked for."""


class DatasetCorruptError(CotrainError):
    """A data set's files are there but cannot be read: truncated, damaged, or another format."""


def _read_errors() -> tuple[type[BaseException], ...]:
    """What the decoders raise on a damaged file (gzip, zip/npz, HDF5, wav, pickle, .mat, images)."""
    import pickle
    import struct
    import wave
    import zipfile

    from scipy.io.matlab import MatReadError

    return (EOFError, OSError, zipfile.BadZipFile, wave.Error, struct.error, pickle.UnpicklingError, MatReadError)


@dataclass(frozen=True)
class DatasetSpec:
    """What the registry knows about one data set.

    Attributes:
        name: registry name.
        loader: ``loader(root, **options) -> DatasetSplits``; ``root`` is the data set's folder
            (None for data sets without a fixed folder).
        folder: sub-folder of the data directory, or None when the data set needs no files
            there (generated data, or a ``path`` option).
        files: paths relative to ``folder`` that must exist.
        how_to_get: one line saying how to get the data.
        sizes: cheap probe ``sizes(root) -> (n_train, n_test)`` under the default options.
        description: one line.
    """

    name: str
    loader: Loader
    folder: str | None
    files: tuple[str, ...]
    how_to_get: str
    sizes: SizeProbe | None
    description: str


@dataclass(frozen=True)
class DatasetInfo:
    """One row of :func:`available_datasets`.

    ``path`` is the folder looked at. Data sets without a fixed folder (generated, or read from a
    ``path`` option) have ``path=None`` and ``found=True``. ``n_train``/``n_test`` are the sizes
    under default options, filled in when the data are found and cheap to count.
    """

    name: str
    found: bool
    path: Path | None
    n_train: int | None
    n_test: int | None
    how_to_get: str
    description: str


_REGISTRY: Registry[DatasetSpec] = Registry("data set")


def register_dataset(
    name: str,
    *,
    folder: str | None = None,
    files: tuple[str, ...] = (),
    how_to_get: str = "",
    sizes: SizeProbe | None = None,
    description: str = "",
) -> Callable[[Loader], Loader]:
    """Decorator registering ``loader(root, **options) -> DatasetSplits`` under ``name``."""

    def decorate(loader: Loader) -> Loader:
        old = _REGISTRY._entries.get(name)
        if old is not None and old.loader is not loader and old.loader.__qualname__ != loader.__qualname__:
            raise ValueError(f"data set {name!r} is already registered")
        doc_line = (inspect.getdoc(loader) or "").split("\n", 1)[0]
        _REGISTRY._entries[name] = DatasetSpec(
            name, loader, folder, tuple(files), how_to_get, sizes, description or doc_line
        )
        return loader

    return decorate


def dataset_names() -> list[str]:
    """Registered names, sorted."""
    _import_readers()
    return _REGISTRY.names()


def get_spec(name: str) -> DatasetSpec:
    """The registration of ``name``; :class:`~cotrain.errors.UnknownNameError` listing the known names otherwise."""
    _import_readers()
    return _REGISTRY.get(name)


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """The data directory: argument, else ``$COTRAIN_DATA``, else ``../shared/data``, else
    ``~/.cotrain/data`` (the last one is returned even when it does not exist)."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    shared = Path.cwd().parent / "shared" / "data"
    if shared.is_dir():
        return shared.resolve()
    return Path.home() / ".cotrain" / "data"


def dataset_root(spec: DatasetSpec, data_dir: str | Path | None = None) -> Path | None:
    """The folder holding ``spec``'s files: ``<data dir>/<folder>``, or the data dir itself when it
    already holds the files. None for data sets without a folder."""
    if spec.folder is None:
        return None
    base = resolve_data_dir(data_dir)
    if not (base / spec.folder).is_dir():
        if base.name == spec.folder or (spec.files and _missing(base, spec.files) is None):
            return base
    return base / spec.folder


def _missing(root: Path, files: tuple[str, ...]) -> Path | None:
    if not root.is_dir():
        return root
    for rel in files:
        if not (root / rel).exists():
            return root / rel
    return None


def not_found(path: Path, what: str, how_to_get: str = "") -> DatasetNotFoundError:
    """A one-line :class:`DatasetNotFoundError` naming ``path`` and how to get the data."""
    hint = f"{how_to_get}; " if how_to_get else ""
    return DatasetNotFoundError(f"{what}: {path} not found ({hint}{GET_DATA_HINT})")


def require_files(spec: DatasetSpec, root: Path) -> None:
    """Raise :class:`DatasetNotFoundError` for the first of ``spec.files`` missing under root."""
    missing = _missing(root, spec.files)
    if missing is not None:
        raise not_found(missing, f"data set {spec.name!r}", spec.how_to_get)


def load_dataset(name: str, *, data_dir: str | Path | None = None, **options: Any) -> DatasetSplits:
    """Load the registered data set ``name`` with reader ``options``.

    Returns train and test :class:`ArrayDataset` s (images float32 in [0, 1], shape (N, C, H, W);
    labels int64, shape (N,)). Raises :class:`DatasetNotFoundError` when files are missing,
    ``UnknownNameError`` for an unknown name, ``OptionsError`` for an unknown option and
    :class:`DatasetCorruptError` (one line naming the data set and its folder) for files that are
    there but cannot be decoded.
    """
    spec = get_spec(name)
    check_options(spec.loader, options, f"data set {name!r}")
    root = dataset_root(spec, data_dir)
    if root is not None:
        require_files(spec, root)
    try:
        return spec.loader(root, **options)
    except CotrainError:
        raise
    except _read_errors() as exc:
        where = root if root is not None else options.get("path")
        why = (str(exc).splitlines() or [""])[0]
        kind = type(exc).__name__ if type(exc).__name__ != "Error" else f"{type(exc).__module__}.Error"
        raise DatasetCorruptError(f"data set {name!r}: cannot read its files in {where}: {kind}: "
                                  f"{why} (a truncated or damaged copy? fetch it again)") from exc


def available_datasets(data_dir: str | Path | None = None) -> list[DatasetInfo]:
    """One :class:`DatasetInfo` per registered data set, sorted by name (cheap: no decoding)."""
    infos = []
    for name in dataset_names():
        spec = _REGISTRY.get(name)
        root = dataset_root(spec, data_dir)
        found = root is None or _missing(root, spec.files) is None
        n_train = n_test = None
        if found and spec.sizes is not None:
            n_train, n_test = spec.sizes(root if root is not None else Path("."))
        infos.append(
            DatasetInfo(name, found, root, n_train, n_test, spec.how_to_get, spec.description)
        )
    return infos


def _import_readers() -> None:
    """Import the modules that register the built-in data sets."""
    import cotrain.data.audio  # noqa: F401
    import cotrain.data.readers  # noqa: F401
    import cotrain.data.synthetic  # noqa: F401
