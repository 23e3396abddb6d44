"""Supervised contrastive learning (Khosla et al. 2020, Eq. 2, L^sup_out).

SimCLR's network with labels: every view of the same class in the (global)
batch is a positive. Training batches must carry labels: ``((x1, x2), labels)``.
"""

import keras

import backends
from models import contrastive_losses
from models.base import SSLModel


@keras.saving.register_keras_serializable(package="nc_ssl")
class SupCon(SSLModel):
    """SupCon with ``config.temperature``; positives and negatives from the global batch."""

    needs_labels = True

    def compute_ssl_loss(self, x1, x2, labels=None, training=True):
        z1 = self.project(x1, training=training)
        z2 = self.project(x2, training=training)
        backend = backends.get()
        loss = contrastive_losses.supcon(
            z1, z2, labels, temperature=self.config.temperature,
            all_gather=backend.cross_replica_gather, replica_offset=backend.replica_offset(z1))
        return loss, {"z1": z1, "z2": z2}
