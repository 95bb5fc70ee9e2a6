import os

import pytest
import torch

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(1)


@pytest.fixture
def tiny_dataset():
    """200 1x8x8 images in 3 classes: a class prototype plus noise."""
    from cotrain.data.base import ArrayDataset

    g = torch.Generator().manual_seed(0)
    y = torch.arange(200) % 3
    prototypes = torch.rand(3, 1, 8, 8, generator=g)
    x = prototypes[y] + 0.5 * torch.randn(200, 1, 8, 8, generator=g)
    attr = torch.randint(0, 2, (200,), generator=g)
    return ArrayDataset(x=x, y=y, attributes={"flag": attr}, name="tiny", num_classes=3)
