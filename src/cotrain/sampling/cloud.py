"""The cloud's preparation (ECOS step 1): phi, phi(pool) and its K-means, as a :class:`CloudIndex`."""

from __future__ import annotations

from pathlib import Path

import torch

from cotrain.sampling.compress import compress
from cotrain.sampling.encoder import (
    ConvEncoder, EncoderConfig, encode, load_encoder, random_encoder, train_denoising_encoder,
)
from cotrain.sampling.protocol import CloudIndex, EcosSettings


def build_encoder(pool_images: torch.Tensor, settings: EcosSettings, *, seed: int) -> ConvEncoder:
    """phi as ``settings.encoder`` names it: ``"denoising"``, ``"random"`` or a file path."""
    config = EncoderConfig(in_channels=pool_images.shape[1], image_size=pool_images.shape[2],
                           width=settings.encoder_width, dim=settings.encoder_dim)
    if settings.encoder == "denoising":
        return train_denoising_encoder(pool_images, config, seed=seed, steps=settings.encoder_steps)
    if settings.encoder == "random":
        return random_encoder(config, seed=seed)
    return load_encoder(Path(settings.encoder))


def prepare_cloud(pool_images: torch.Tensor, settings: EcosSettings, *, seed: int,
                  encoder: ConvEncoder | None = None) -> CloudIndex:
    """Encode the pool (N, C, S, S) with phi (built unless given) and cluster it into ``settings.k``."""
    phi = encoder if encoder is not None else build_encoder(pool_images, settings, seed=seed)
    features = encode(phi, pool_images)
    return CloudIndex(encoder=phi, features=features,
                      compression=compress(features, k=settings.k, seed=seed, niter=settings.kmeans_niter))
