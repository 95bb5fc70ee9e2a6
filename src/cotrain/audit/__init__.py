"""Gradient audit (patent CN114287009A): what a curious FedSGD server learns from one upload.

Deep-feature reconstruction from the last block's and the head's gradients, label recovery,
batch-size estimation when the upload's metadata lacks it, attribute inference with the server's
auxiliary data, baselines and scoring.
"""

from cotrain.audit.batch_size import BatchSizeEstimate, estimate_batch_size
from cotrain.audit.distance import gradient_distance
from cotrain.audit.feature_reconstruction import (AuxiliaryPrior, Reconstruction, ReconstructionSettings,
                                                  auxiliary_prior, reconstruct_features)
from cotrain.audit.labels import recover_label_counts, recover_labels, single_sample_embedding
from cotrain.audit.threat_model import ObservedUpload, UploadRecorder

__all__ = ["BatchSizeEstimate", "estimate_batch_size", "gradient_distance", "AuxiliaryPrior", "Reconstruction",
           "ReconstructionSettings", "auxiliary_prior",
           "reconstruct_features", "recover_label_counts", "recover_labels", "single_sample_embedding",
           "ObservedUpload", "UploadRecorder"]
