"""The cloud's feature encoder phi: trained on the unlabelled pool, identified by a content hash.

ECOS (Hong et al., NeurIPS 2022, arXiv 2210.12575) clusters phi(pool) and lets the client score
the clusters with phi(its data), so both sides must use the same phi. No pretrained weights are
reachable here, so the cloud trains phi itself, self-supervised, on the pool.

Choice: a **denoising autoencoder** (Vincent et al., ICML 2008), not a contrastive encoder.
The clusters must separate *domains* (MNIST vs MNIST-M vs faces) more than classes, and domain
identity lives in low-level statistics (background colour, stroke width, texture) that a
reconstruction loss must keep but that contrastive augmentations (colour jitter, crops) are
designed to throw away; it also needs one view per step instead of two (half the cost on CPU).
The loss, for x in [0, 1]^{3 x 32 x 32} and a corruption x~ = mask * (x + sigma * n):

    L = || g(phi(x~)) - x ||^2,     phi: R^{3x32x32} -> R^D,   g: R^D -> R^{3x32x32}

Features are phi(x) / ||phi(x)||_2 (shape (N, D)), so K-means on them is cosine clustering.
:func:`random_encoder` is the same network untrained, the baseline the benchmark compares.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cotrain.errors import ConfigError
from cotrain.seeding import derive_seed, seed_torch, torch_generator


@dataclass(frozen=True)
class EncoderConfig:
    """Architecture of :class:`ConvEncoder` (travels as JSON with the weights)."""

    in_channels: int = 3
    image_size: int = 32
    width: int = 32
    dim: int = 64

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "EncoderConfig":
        return cls(**{k: int(v) for k, v in d.items()})


class ConvEncoder(nn.Module):
    """Three stride-2 conv layers then a linear map: (N, C, S, S) -> (N, dim)."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        if config.image_size % 8:
            raise ConfigError(f"encoder image_size must be a multiple of 8, got {config.image_size}")
        w, s = config.width, config.image_size // 8
        self.config = config
        self.body = nn.Sequential(
            nn.Conv2d(config.in_channels, w, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(2 * w, 4 * w, 3, 2, 1), nn.ReLU(), nn.Flatten(),
            nn.Linear(4 * w * s * s, config.dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _decoder(config: EncoderConfig) -> nn.Module:
    w, s = config.width, config.image_size // 8
    return nn.Sequential(
        nn.Linear(config.dim, 4 * w * s * s), nn.ReLU(), nn.Unflatten(1, (4 * w, s, s)),
        nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1), nn.ReLU(),
        nn.ConvTranspose2d(2 * w, w, 4, 2, 1), nn.ReLU(),
        nn.ConvTranspose2d(w, config.in_channels, 4, 2, 1), nn.Sigmoid())


def random_encoder(config: EncoderConfig, *, seed: int) -> ConvEncoder:
    """phi with PyTorch's default initialisation drawn from the stream ``(seed, "encoder_init")``."""
    with torch.random.fork_rng(devices=[]):
        seed_torch(derive_seed(seed, "encoder_init"))
        return ConvEncoder(config).eval()


def train_denoising_encoder(images: torch.Tensor, config: EncoderConfig, *, seed: int, steps: int = 1000,
                            batch_size: int = 128, lr: float = 1e-3, noise_std: float = 0.2,
                            mask_rate: float = 0.25) -> ConvEncoder:
    """Train phi as the encoder of a denoising autoencoder on ``images`` (N, C, S, S) in [0, 1]."""
    encoder = random_encoder(config, seed=seed).train()
    with torch.random.fork_rng(devices=[]):
        seed_torch(derive_seed(seed, "decoder_init"))
        decoder = _decoder(config)
    opt = torch.optim.Adam(list(encoder.parameters()) + list(decoder.parameters()), lr=lr)
    g = torch_generator(seed, "encoder_train")
    for _ in range(steps):
        x = images[torch.randint(len(images), (min(batch_size, len(images)),), generator=g)]
        noise = torch.randn(x.shape, generator=g) * noise_std
        keep = (torch.rand(x.shape[0], 1, *x.shape[2:], generator=g) >= mask_rate).to(x.dtype)
        loss = ((decoder(encoder(keep * (x + noise))) - x) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return encoder.eval()


@torch.no_grad()
def encode(encoder: nn.Module, images: torch.Tensor, *, batch_size: int = 512) -> np.ndarray:
    """L2-normalised features phi(x)/||phi(x)||, float32 of shape (N, D)."""
    was_training = encoder.training
    encoder.eval()
    parts = [encoder(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
    encoder.train(was_training)
    z = torch.cat(parts) if parts else torch.zeros(0, 0)
    return torch.nn.functional.normalize(z, dim=1).numpy().astype(np.float32)


def encoder_hash(encoder: ConvEncoder) -> str:
    """SHA-256 of the architecture (JSON) and every state tensor's bytes, in key order."""
    h = hashlib.sha256(json.dumps(encoder.config.to_json(), sort_keys=True).encode())
    for name, t in sorted(encoder.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def encoder_state(encoder: ConvEncoder) -> dict[str, torch.Tensor]:
    """The tensors that travel when phi is sent (names prefixed so they cannot clash)."""
    return {f"encoder.{k}": v.detach().clone() for k, v in encoder.state_dict().items()}


def encoder_from_state(config: EncoderConfig, tensors: dict[str, torch.Tensor]) -> ConvEncoder:
    """Rebuild phi from :func:`encoder_state`'s tensors."""
    encoder = ConvEncoder(config)
    encoder.load_state_dict({k[len("encoder."):]: v for k, v in tensors.items() if k.startswith("encoder.")})
    return encoder.eval()


def save_encoder(encoder: ConvEncoder, path: str | Path) -> None:
    torch.save({"config": encoder.config.to_json(), "state_dict": encoder.state_dict()}, Path(path))


def load_encoder(path: str | Path) -> ConvEncoder:
    """A user-supplied (e.g. pretrained) phi saved by :func:`save_encoder`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"encoder file {str(path)!r} does not exist")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or set(blob) != {"config", "state_dict"}:
        raise ConfigError(f"encoder file {str(path)!r} is not a cotrain encoder (keys config, state_dict)")
    encoder = ConvEncoder(EncoderConfig.from_json(blob["config"]))
    encoder.load_state_dict(blob["state_dict"])
    return encoder.eval()
