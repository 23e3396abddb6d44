"""Models: encoders, heads, losses, predictor maths and the Siamese/classifier networks."""

from models.backbones import build_encoder, resnet, resnet18, resnet34
from models.classifier import ClassificationNetwork
from models.heads import predictor, projector
from models.losses import negative_cosine, symmetric_loss
from models.predictors import (accumulate_correlation, direct_copy_weights,
                               direct_pred_weights, symmetrize, symmetrize_two_layer)
from models.siamese import SiameseNetwork, build_optimizer, dtype_policy, ema_tau

__all__ = [
    "ClassificationNetwork", "SiameseNetwork", "accumulate_correlation", "build_encoder",
    "build_optimizer", "direct_copy_weights", "direct_pred_weights", "dtype_policy",
    "ema_tau", "negative_cosine", "predictor", "projector", "resnet", "resnet18",
    "resnet34", "symmetric_loss", "symmetrize", "symmetrize_two_layer",
]
