"""Readers on tiny files written here in the real formats, the registry, and (when present)
a few real files from ../shared/data."""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from cotrain.data import (
    DatasetNotFoundError,
    available_datasets,
    dataset_names,
    load_dataset,
    map_images,
    resize,
    resolve_data_dir,
    to_grayscale,
    to_rgb,
)
from cotrain.data.readers.utkface import age_group, parse_name

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COTRAIN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("COTRAIN_DATA", raising=False)


def _check_images(x: torch.Tensor, shape: tuple[int, ...]) -> None:
    assert x.dtype == torch.float32
    assert tuple(x.shape[1:]) == shape
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


def _write_idx(path: Path, arr: np.ndarray) -> None:
    code = 0x08
    header = struct.pack(">BBBB", 0, 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def _rgb(rng: np.random.Generator, size: int) -> np.ndarray:
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


# ---------------------------------------------------------------- registry


def test_registry_lists_every_reader() -> None:
    names = set(dataset_names())
    assert {"mnist", "usps", "mnist_m", "dsprites", "utkface", "cifar10", "olivetti", "npz",
            "wav", "synthetic"} <= names


def test_missing_files_error_names_path_and_hint(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("mnist", data_dir=tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "mnist") in msg and "COTRAIN_DATA" in msg and "\n" not in msg
    assert isinstance(err.value, FileNotFoundError)


def test_unknown_name_and_option(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown data set 'nope'; known: .*mnist"):
        load_dataset("nope")
    with pytest.raises(ValueError, match="unknown option.*colour.*accepted: .*size"):
        load_dataset("usps", data_dir=tmp_path, colour=True)


def test_data_dir_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_data_dir(tmp_path) == tmp_path
    monkeypatch.setenv("COTRAIN_DATA", str(tmp_path / "env"))
    assert resolve_data_dir() == tmp_path / "env"
    monkeypatch.delenv("COTRAIN_DATA")
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "proj").mkdir()
    monkeypatch.chdir(tmp_path / "proj")
    assert resolve_data_dir() == (tmp_path / "shared" / "data").resolve()
    monkeypatch.chdir(tmp_path)
    assert resolve_data_dir() == Path.home() / ".cotrain" / "data"


# ---------------------------------------------------------------- mnist


@pytest.fixture()
def mnist_dir(tmp_path: Path) -> Path:
    d = tmp_path / "mnist"
    d.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 12), ("t10k", 5)):
        _write_idx(d / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(d / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return d


def test_mnist(mnist_dir: Path) -> None:
    s = load_dataset("mnist", data_dir=mnist_dir.parent)
    _check_images(s.train.x, (1, 28, 28))
    assert len(s.train) == 12 and len(s.test) == 5
    assert s.train.y.dtype == torch.int64 and s.train.y.tolist() == [i % 10 for i in range(12)]
    assert s.train.num_classes == 10
    raw = gzip.open(mnist_dir / "train-images-idx3-ubyte.gz").read()[16:]
    assert s.train.x[0, 0, 0, 1].item() == pytest.approx(raw[1] / 255)
    # data_dir may also point at the data set's own folder
    assert len(load_dataset("mnist", data_dir=mnist_dir).test) == 5
    info = {i.name: i for i in available_datasets(mnist_dir.parent)}
    assert info["mnist"].found and (info["mnist"].n_train, info["mnist"].n_test) == (12, 5)
    assert not info["usps"].found and "usps.h5" in info["usps"].how_to_get


def test_mnist_env_var(mnist_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COTRAIN_DATA", str(mnist_dir.parent))
    assert len(load_dataset("mnist").train) == 12


# ---------------------------------------------------------------- usps


def test_usps(tmp_path: Path) -> None:
    (tmp_path / "usps").mkdir()
    rng = np.random.default_rng(1)
    with h5py.File(tmp_path / "usps" / "usps.h5", "w") as f:
        for split, n in (("train", 7), ("test", 3)):
            g = f.create_group(split)
            g["data"] = rng.random((n, 256)).astype(np.float32)
            g["target"] = (np.arange(n) % 10).astype(np.int32)
    s = load_dataset("usps", data_dir=tmp_path)
    _check_images(s.train.x, (1, 16, 16))
    assert len(s.train) == 7 and s.test.y.tolist() == [0, 1, 2]
    with h5py.File(tmp_path / "usps" / "usps.h5") as f:
        assert s.train.x[2, 0, 3, 5].item() == pytest.approx(f["train"]["data"][2, 3 * 16 + 5])
    big = load_dataset("usps", data_dir=tmp_path, size=28)
    _check_images(big.train.x, (1, 28, 28))


# ---------------------------------------------------------------- mnist_m


def test_mnist_m(tmp_path: Path) -> None:
    d = tmp_path / "mnist_m"
    (d / "mnist_m_test").mkdir(parents=True)
    rng = np.random.default_rng(2)
    lines = []
    for i in range(30):
        name = f"{i:08d}.png"
        Image.fromarray(_rgb(rng, 32)).save(d / "mnist_m_test" / name)
        lines.append(f"{name} {i % 3}")
    (d / "mnist_m_test_labels.txt").write_text("\n".join(lines) + "\n")
    s = load_dataset("mnist_m", data_dir=tmp_path)
    _check_images(s.train.x, (3, 32, 32))
    assert len(s.train) == 24 and len(s.test) == 6  # 20% of each of the 3 labels
    assert np.bincount(s.test.y.numpy()).tolist() == [2, 2, 2]
    again = load_dataset("mnist_m", data_dir=tmp_path)
    assert torch.equal(again.test.x, s.test.x)
    other = load_dataset("mnist_m", data_dir=tmp_path, seed=1)
    assert not torch.equal(other.test.x, s.test.x)
    small = load_dataset("mnist_m", data_dir=tmp_path, size=28, grayscale=True)
    _check_images(small.train.x, (1, 28, 28))
    # the first image comes back pixel-exact
    pixel = np.asarray(Image.open(d / "mnist_m_test" / "00000000.png"))[5, 7]
    full = torch.cat([s.train.x, s.test.x])
    assert any(torch.allclose(img[:, 5, 7], torch.tensor(pixel / 255, dtype=torch.float32)) for img in full)


# ---------------------------------------------------------------- dsprites


def test_dsprites(tmp_path: Path) -> None:
    (tmp_path / "dsprites").mkdir()
    n = 60
    rng = np.random.default_rng(3)
    classes = np.stack([np.arange(n) % 3, np.arange(n) % 6, rng.integers(0, 40, n),
                        rng.integers(0, 32, n), rng.integers(0, 32, n)], axis=1)
    values = np.stack([classes[:, 0] + 1.0, 0.5 + classes[:, 1] * 0.1, classes[:, 2] / 39 * 2 * math.pi,
                       classes[:, 3] / 31, classes[:, 4] / 31], axis=1)
    imgs = np.zeros((n, 64, 64), np.uint8)
    imgs[:, :32, :32] = 1
    np.savez(tmp_path / "dsprites" / "dsprites_subset.npz", imgs=imgs, latents_classes=classes,
             latents_values=values)
    s = load_dataset("dsprites", data_dir=tmp_path, test_fraction=0.2)
    _check_images(s.train.x, (1, 32, 32))
    assert len(s.train) + len(s.test) == n and len(s.test) == 12
    assert s.train.x[0, 0, 0, 0].item() == 1.0 and s.train.x[0, 0, 20, 20].item() == 0.0
    assert set(s.train.attributes) == {"scale", "scale_large", "orientation", "pos_x", "pos_y"}
    full_scale = torch.cat([s.train.attributes["scale"], s.test.attributes["scale"]])
    full_large = torch.cat([s.train.attributes["scale_large"], s.test.attributes["scale_large"]])
    assert torch.equal(full_large, (full_scale >= 3).long())
    assert int(s.train.attributes["pos_x"].max()) <= 3 and s.train.num_classes == 3
    x16 = load_dataset("dsprites", data_dir=tmp_path, size=16, max_samples=30, task="scale_large")
    _check_images(x16.train.x, (1, 16, 16))
    assert len(x16.train) + len(x16.test) == 30 and "scale" not in x16.train.attributes
    assert x16.train.x[0, 0, 0, 0].item() == 1.0 and x16.train.num_classes == 2
    with pytest.raises(ValueError, match="task"):
        load_dataset("dsprites", data_dir=tmp_path, task="colour")
    with pytest.raises(DatasetNotFoundError, match="dsprites_downsampled.npz"):
        load_dataset("dsprites", data_dir=tmp_path, variant="grid")


# ---------------------------------------------------------------- utkface


def test_utkface_name_parsing() -> None:
    assert parse_name("25_1_3_20170104.jpg.chip.jpg") == {"age": 25, "gender": 1, "race": 3, "age_group": 1}
    assert parse_name("61_1_20170109142408075.jpg.chip.jpg") is None
    assert [age_group(a) for a in (0, 19, 20, 39, 40, 59, 60, 110)] == [0, 0, 1, 1, 2, 2, 3, 3]


def test_utkface(tmp_path: Path) -> None:
    d = tmp_path / "utkface_crop_part1" / "crop_part1"
    d.mkdir(parents=True)
    rng = np.random.default_rng(4)
    for i in range(20):
        age, gender, race = 5 + 3 * i, i % 2, i % 5
        Image.fromarray(_rgb(rng, 48)).save(d / f"{age}_{gender}_{race}_2017010{i:02d}.jpg.chip.jpg")
    Image.fromarray(_rgb(rng, 48)).save(d / "61_1_20170109142408075.jpg.chip.jpg")  # no race
    s = load_dataset("utkface", data_dir=tmp_path, size=16)
    _check_images(s.train.x, (3, 16, 16))
    assert len(s.train) + len(s.test) == 20 and len(s.test) == 5
    assert s.train.num_classes == 5 and set(s.train.attributes) == {"gender", "age_group"}
    # labels agree with the names: race = index % 5 and gender = index % 2 -> (race, gender) pairs
    pairs = set(zip(s.train.y.tolist(), s.train.attributes["gender"].tolist()))
    assert pairs <= {(i % 5, i % 2) for i in range(20)}
    cached = list((tmp_path / "cache").glob("utkface-*.npz"))
    assert len(cached) == 1
    again = load_dataset("utkface", data_dir=tmp_path, size=16)
    assert torch.equal(again.train.x, s.train.x)
    ages = load_dataset("utkface", data_dir=tmp_path, size=16, task="age_group", cache=False)
    assert set(ages.train.attributes) == {"gender", "race"} and ages.train.num_classes == 4
    assert ages.train.class_names == ["0-19", "20-39", "40-59", "60+"]


# ---------------------------------------------------------------- cifar10


def test_cifar10(tmp_path: Path) -> None:
    root = tmp_path / "cifar10_jpg"
    rng = np.random.default_rng(5)
    for split, per_class in (("train_subset", 2), ("test", 1)):
        for cls in ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"):
            (root / split / cls).mkdir(parents=True)
            for j in range(per_class):
                Image.fromarray(_rgb(rng, 32)).save(root / split / cls / f"{j:04d}.jpg", quality=75)
    s = load_dataset("cifar10", data_dir=tmp_path)
    _check_images(s.train.x, (3, 32, 32))
    assert len(s.train) == 20 and len(s.test) == 10
    assert s.test.y.tolist() == list(range(10)) and s.train.class_names[3] == "cat"
    decoded = np.array(Image.open(root / "test" / "bird" / "0000.jpg"))
    assert torch.allclose(s.test.x[2], torch.from_numpy(decoded).permute(2, 0, 1).float() / 255)
    sub = load_dataset("cifar10", data_dir=tmp_path, max_samples=4, size=16)
    _check_images(sub.train.x, (3, 16, 16))
    assert len(sub.train) == 4 and len(sub.test) == 4


# ---------------------------------------------------------------- olivetti


def test_olivetti(tmp_path: Path) -> None:
    (tmp_path / "olivetti_faces").mkdir()
    n = 30  # 3 people
    faces = np.zeros((4096, n), np.uint8)
    for k in range(n):
        img = np.zeros((64, 64), np.uint8)
        img[k % 10, :] = 200  # a horizontal line at row k % 10 (column-major storage)
        faces[:, k] = img.T.reshape(-1)
    scipy.io.savemat(tmp_path / "olivetti_faces" / "olivettifaces.mat", {"faces": faces})
    s = load_dataset("olivetti", data_dir=tmp_path)
    _check_images(s.train.x, (1, 64, 64))
    assert len(s.train) == 24 and len(s.test) == 6
    assert np.bincount(s.test.y.numpy()).tolist() == [2, 2, 2]
    row = s.train.x[0, 0].sum(dim=1).argmax().item()
    assert s.train.x[0, 0, row].min().item() == pytest.approx(200 / 255)


# ---------------------------------------------------------------- npz


def test_npz_split_and_given_test(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    path = tmp_path / "mine.npz"
    np.savez(path, x=rng.integers(0, 256, (40, 8, 8), dtype=np.uint8), y=np.arange(40) % 4,
             attr_colour=np.arange(40) % 2, domain=np.arange(40) % 3)
    s = load_dataset("npz", path=path)
    _check_images(s.train.x, (1, 8, 8))
    assert len(s.train) == 32 and s.train.name == "mine"
    assert set(s.train.attributes) == {"colour"} and s.train.domain is not None
    path2 = tmp_path / "vec.npz"
    np.savez(path2, x=rng.random((10, 5)), y=np.arange(10) % 2, x_test=rng.random((4, 5)),
             y_test=np.array([0, 1, 2, 1]))
    s2 = load_dataset("npz", path=path2)
    assert tuple(s2.train.x.shape) == (10, 5) and len(s2.test) == 4
    assert s2.train.num_classes == 3 == s2.test.num_classes


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"x": np.zeros((4, 3))}, "missing required array 'y'"),
        ({"x": np.zeros((4, 3)), "y": np.zeros(5, int)}, r"shape \(5,\), expected \(4,\)"),
        ({"x": np.zeros((4, 3)), "y": np.zeros(4)}, "must hold integers"),
        ({"x": np.zeros((4, 3)), "y": np.zeros(4, int), "attr_a": np.zeros(3, int)}, "attr_a"),
        ({"x": np.zeros((4, 3)), "y": np.zeros(4, int), "labels": np.zeros(4)}, "unknown keys"),
        ({"x": np.zeros((4, 3)), "y": np.zeros(4, int), "x_test": np.zeros((2, 3))}, "together"),
        ({"x": np.zeros((4, 3)), "y": np.zeros(4, int), "x_test": np.zeros((2, 4)),
          "y_test": np.zeros(2, int)}, "x_test samples have shape"),
    ],
)
def test_npz_validation(tmp_path: Path, arrays: dict, message: str) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=message):
        load_dataset("npz", path=tmp_path / "bad.npz")


def test_npz_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="nothere.npz"):
        load_dataset("npz", path=tmp_path / "nothere.npz")


# ---------------------------------------------------------------- transforms


def test_transforms() -> None:
    x = torch.rand(2, 1, 16, 16)
    assert tuple(to_rgb(resize(x, 28)).shape) == (2, 3, 28, 28)
    assert torch.allclose(to_grayscale(to_rgb(x)), x, atol=1e-6)
    assert float(resize(x, 8).max()) <= float(x.max()) + 1e-6
    with pytest.raises(ValueError):
        to_rgb(torch.rand(2, 2, 4, 4))


# ---------------------------------------------------------------- real data (when present)

real = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not present")


@real
def test_real_small_files() -> None:
    mnist = load_dataset("mnist", data_dir=SHARED)
    assert len(mnist.train) == 60000 and len(mnist.test) == 10000
    assert np.bincount(mnist.test.y.numpy()).tolist()[:3] == [980, 1135, 1032]
    usps = load_dataset("usps", data_dir=SHARED, size=28)
    assert (len(usps.train), len(usps.test)) == (7291, 2007) and usps.train.input_shape == (1, 28, 28)
    olivetti = load_dataset("olivetti", data_dir=SHARED)
    assert (len(olivetti.train), len(olivetti.test)) == (320, 80) and olivetti.train.num_classes == 40
    dsprites = load_dataset("dsprites", data_dir=SHARED, max_samples=2000)
    assert len(dsprites.train) + len(dsprites.test) == 2000 and dsprites.train.x.max() > 0


@real
def test_real_image_folders() -> None:
    mm = load_dataset("mnist_m", data_dir=SHARED, max_samples=300)
    assert mm.train.input_shape == (3, 32, 32) and len(mm.train) + len(mm.test) == 300
    utk = load_dataset("utkface", data_dir=SHARED, max_samples=100, cache=False)
    assert utk.train.input_shape == (3, 32, 32) and utk.train.num_classes == 5
    cifar = load_dataset("cifar10", data_dir=SHARED, max_samples=100, cache=False)
    assert len(cifar.train) == 100 and len(cifar.test) == 100
    info = {i.name: i for i in available_datasets(SHARED)}
    assert info["utkface"].found and info["utkface"].n_train + info["utkface"].n_test == 9778
    assert (info["cifar10"].n_train, info["cifar10"].n_test) == (10000, 10000)


def test_map_images_keeps_labels() -> None:
    s = load_dataset("synthetic", n_train=20, n_test=10)
    rgb = map_images(s, lambda x: to_rgb(resize(x, 32)))
    assert rgb.train.input_shape == (3, 32, 32) and torch.equal(rgb.train.y, s.train.y)
