"""The digits pool of the ECOS benchmark (benchmarks/open_source_sampling.py), from
``cotrain.sampling.pool.build_digits_pool``, in the benchmark's :class:`Pool` view."""

from __future__ import annotations

import numpy as np

from cotrain.sampling.pool import build_digits_pool


def pool_for_benchmark(data_dir: str, domain: str, *, seed: int, per_source: int, client_cap: int, test_cap: int):
    from open_source_sampling import Pool

    d = build_digits_pool(data_dir, domain, seed=seed, size=32, max_per_source=per_source,
                          max_client_train=client_cap, max_client_test=test_cap)
    return Pool(client_train=d.client_train, client_test=d.client_test, x=d.pool_x, y=d.pool_y,
                source=np.asarray(d.source_names)[d.pool_source.numpy()],
                note="cotrain.sampling.pool.build_digits_pool")
