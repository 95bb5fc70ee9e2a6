"""Readers given damaged files: one clear error naming the data set and where, never a decoder's traceback."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from cotrain.cli import app
from cotrain.data import DatasetCorruptError, load_dataset
from cotrain.data.readers.cache import cached_arrays


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COTRAIN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("COTRAIN_DATA", raising=False)


def _write_idx(path: Path, arr: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def _mnist(root: Path) -> Path:
    d = root / "mnist"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 12), ("t10k", 5)):
        _write_idx(d / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(d / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return d


def test_truncated_gz_names_the_data_set_and_the_folder(tmp_path: Path):
    # Prepare: a valid MNIST folder, then its training images cut in half (an interrupted download)
    d = _mnist(tmp_path / "data")
    f = d / "train-images-idx3-ubyte.gz"
    f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])
    # Execute / Assert
    with pytest.raises(DatasetCorruptError, match=r"data set 'mnist': cannot read its files in .*mnist: EOFError"):
        load_dataset("mnist", data_dir=tmp_path / "data")


def test_h5_that_is_not_hdf5_and_h5_with_wrong_keys(tmp_path: Path):
    (tmp_path / "usps").mkdir()
    (tmp_path / "usps" / "usps.h5").write_bytes(b"not an hdf5 file")
    with pytest.raises(DatasetCorruptError, match="data set 'usps'.*signature"):
        load_dataset("usps", data_dir=tmp_path)
    with h5py.File(tmp_path / "usps" / "usps.h5", "w") as h5:
        h5.create_dataset("images", data=np.zeros(3))
    with pytest.raises(ValueError, match=r"usps.h5: expected group 'train' with 'data' and 'target'"):
        load_dataset("usps", data_dir=tmp_path)


def test_bad_wav_header(tmp_path: Path):
    (tmp_path / "1_jackson_0.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk")
    with pytest.raises(DatasetCorruptError, match=r"data set 'wav'.*wave.Error"):
        load_dataset("wav", path=tmp_path)


def test_npz_garbage_and_wrong_keys(tmp_path: Path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage, not a zip")
    with pytest.raises(DatasetCorruptError, match="bad.npz: not an .npz file of plain arrays"):
        load_dataset("npz", path=bad)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, images=np.zeros((4, 2)), labels=np.zeros(4))
    with pytest.raises(ValueError, match="wrong.npz"):
        load_dataset("npz", path=wrong)


def test_a_damaged_cache_entry_is_rebuilt_not_fatal(tmp_path: Path):
    calls = []

    def build():
        calls.append(1)
        return {"x": np.arange(3)}

    first = cached_arrays("t", {"k": 1}, build)
    entry = next((tmp_path / "cache").glob("t-*.npz"))
    entry.write_bytes(entry.read_bytes()[:20])  # half-written by a killed process
    again = cached_arrays("t", {"k": 1}, build)
    assert len(calls) == 2 and np.array_equal(first["x"], again["x"])


def test_cli_says_one_line_for_a_damaged_data_set(tmp_path: Path):
    d = _mnist(tmp_path / "data")
    (d / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b garbage")
    cfg = tmp_path / "exp.toml"
    cfg.write_text(f'[data]\ndataset = "mnist"\ndata_dir = "{tmp_path / "data"}"\nparticipants = 2\n')
    result = CliRunner().invoke(app, ["validate", str(cfg)], env={"COLUMNS": "5000"})
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith("error: data set 'mnist': cannot read its files") and "Traceback" not in result.output
