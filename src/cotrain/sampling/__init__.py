"""Collaborative open-source sampling (ECOS; Hong, Lyu, Zhou, Spranger, NeurIPS 2022).

The cloud compresses its unlabelled pool into K-means centroids of a self-supervised encoder's
features; the client releases DP-noised Centroid Coverage scores of its private data; the cloud
spends a sampling budget on high-scoring clusters with K-center inside each. See docs/sampling.md.
"""

from cotrain.sampling.cloud import build_encoder, prepare_cloud
from cotrain.sampling.compress import Compression, compress, nearest_centroids
from cotrain.sampling.coverage import COVERAGE_RULES, CoverageRule, build_rule
from cotrain.sampling.encoder import (
    ConvEncoder, EncoderConfig, encode, encoder_hash, load_encoder, random_encoder, save_encoder,
    train_denoising_encoder,
)
from cotrain.sampling.protocol import (
    CloudIndex, EcosClient, EcosResult, EcosSettings, evaluate_at_client, label_with_private_knn, run_ecos,
    share_encoder,
)
from cotrain.sampling.selection import (
    Allocation, allocate_budget, kcenter_greedy, score_weights, select_ecos, select_kcenter, select_random,
)

__all__ = [
    "COVERAGE_RULES", "Allocation", "CloudIndex", "Compression", "ConvEncoder", "CoverageRule", "EcosClient",
    "EcosResult", "EcosSettings", "EncoderConfig", "allocate_budget", "build_encoder", "build_rule", "compress",
    "encode", "encoder_hash", "evaluate_at_client", "kcenter_greedy", "label_with_private_knn", "load_encoder", "nearest_centroids",
    "prepare_cloud", "random_encoder", "run_ecos", "save_encoder", "score_weights", "select_ecos",
    "select_kcenter", "select_random", "share_encoder", "train_denoising_encoder",
]
