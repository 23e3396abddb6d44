"""Method registry: ``Config.method`` -> model class (solo-learn's METHODS table)."""

from models.barlow_twins import BarlowTwins
from models.moco import MoCo
from models.siamese import SiameseNetwork
from models.simclr import SimCLR
from models.supcon import SupCon
from models.swav import SwAV

METHOD_CLASSES = {
    "noncontrastive": SiameseNetwork,  # BYOL, SimSiam, DirectPred, DirectCopy
    "simclr": SimCLR,
    "supcon": SupCon,
    "swav": SwAV,
    "moco": MoCo,
    "barlow_twins": BarlowTwins,
}


def build_model(config):
    """The model of ``config.method``, built from ``config``."""
    if config.method not in METHOD_CLASSES:
        raise ValueError(f"Unknown method {config.method!r}. "
                         f"Valid: {sorted(METHOD_CLASSES)}")
    return METHOD_CLASSES[config.method](config)
