"""Barlow Twins (Zbontar et al. 2021, Eq. 1-2): cross-correlation of the two views.

No predictor and no target. ``C = z1n^T z2n / N`` of the batch-standardised
projections of the global batch; loss = ``sum_i (1 - C_ii)^2 + lambda sum_{i!=j}
C_ij^2``, times ``config.barlow_scale``.
"""

import keras

import backends
from models import contrastive_losses
from models.base import SSLModel


@keras.saving.register_keras_serializable(package="nc_ssl")
class BarlowTwins(SSLModel):
    """Barlow Twins with ``config.barlow_lambda`` and ``config.barlow_scale``."""

    def compute_ssl_loss(self, x1, x2, labels=None, training=True):
        z1 = self.project(x1, training=training)
        z2 = self.project(x2, training=training)
        loss = contrastive_losses.barlow_twins(z1, z2, lambd=self.config.barlow_lambda,
                                               all_reduce_sum=backends.get().cross_replica_sum)
        return self.config.barlow_scale * loss, {"z1": z1, "z2": z2}
