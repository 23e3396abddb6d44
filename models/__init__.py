"""Models: encoders, heads, losses, predictor maths and the SSL method networks."""

from models import contrastive_losses
from models.backbones import build_encoder, resnet, resnet18, resnet34
from models.base import SSLModel, dtype_policy, ema_tau
from models.classifier import ClassificationNetwork
from models.heads import predictor, projector
from models.losses import negative_cosine, symmetric_loss
from models.optimizers import build_optimizer
from models.predictors import (accumulate_correlation, direct_copy_weights,
                               direct_pred_weights, symmetrize, symmetrize_two_layer)
from models.registry import METHOD_CLASSES, build_model
from models.siamese import SiameseNetwork

__all__ = [
    "ClassificationNetwork", "METHOD_CLASSES", "SSLModel", "SiameseNetwork",
    "accumulate_correlation", "build_encoder", "build_model", "build_optimizer",
    "contrastive_losses", "direct_copy_weights", "direct_pred_weights", "dtype_policy", "ema_tau",
    "negative_cosine", "predictor", "projector", "resnet", "resnet18", "resnet34",
    "symmetric_loss", "symmetrize", "symmetrize_two_layer",
]
