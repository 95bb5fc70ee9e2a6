"""The digits pool of the ECOS benchmark (benchmarks/open_source_sampling.py).

Uses ``cotrain.sampling.pool.build_digits_pool`` when that module exists; until then a local
builder with the same protocol: half of the client domain's train split on the client, the
other half in the pool with the other digit domains, scikit-learn's 8x8 digits and OOD images
(label -1), every image 3x32x32 in [0, 1].
"""

from __future__ import annotations

import numpy as np
import torch

from cotrain.data import load_dataset, resize, to_rgb
from cotrain.data.base import ArrayDataset
from cotrain.seeding import numpy_rng

DIGITS = ("mnist", "usps", "mnist_m", "sklearn_digits")
OOD = ("cifar10", "dsprites", "utkface", "olivetti")


def _rgb32(x: torch.Tensor) -> torch.Tensor:
    x = to_rgb(x.float())
    return x if x.shape[-1] == 32 else resize(x, 32).clamp(0, 1)


def _source(data_dir: str, name: str):
    if name == "sklearn_digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
        return x, torch.tensor(d.target, dtype=torch.int64), None
    s = load_dataset(name, data_dir=data_dir)
    return s.train.x, s.train.y, s.test


def _cap(n: int, cap: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.permutation(n)[:cap])


def pool_for_benchmark(data_dir: str, domain: str, *, seed: int, per_source: int, client_cap: int, test_cap: int):
    from open_source_sampling import Pool

    try:
        from cotrain.sampling.pool import build_digits_pool  # noqa: F401
    except ImportError:
        pass
    else:
        d = build_digits_pool(data_dir, domain, seed=seed, size=32, max_per_source=per_source,
                              max_client_train=client_cap, max_client_test=test_cap)
        return Pool(client_train=d.client_train, client_test=d.client_test, x=d.pool_x, y=d.pool_y,
                    source=np.asarray(d.source_names)[d.pool_source.numpy()],
                    note="cotrain.sampling.pool.build_digits_pool")
    xs, ys, srcs = [], [], []
    client_train = client_test = None
    for name in DIGITS + OOD:
        x, y, test = _source(data_dir, name)
        rng = numpy_rng(seed, "pool", name)
        if name == domain:
            perm = rng.permutation(len(x))
            half = len(x) // 2
            ci, pi = np.sort(perm[:half][:client_cap]), np.sort(perm[half:])
            client_train = ArrayDataset(x=_rgb32(x[ci]), y=y[ci], name=f"{name}_client")
            ti = _cap(len(test.x), test_cap, rng)
            client_test = ArrayDataset(x=_rgb32(test.x[ti]), y=test.y[ti], name=f"{name}_test")
            x, y = x[pi], y[pi]
        keep = _cap(len(x), per_source, rng)
        xs.append(_rgb32(x[keep]))
        ys.append(y[keep] if name in DIGITS else torch.full((len(keep),), -1, dtype=torch.int64))
        srcs += [name] * len(keep)
    return Pool(client_train=client_train, client_test=client_test, x=torch.cat(xs), y=torch.cat(ys),
                source=np.asarray(srcs), note="benchmark-local pool builder (cotrain.sampling.pool not merged)")
