"""SimCLR (Chen, Kornblith, Norouzi & Hinton 2020): NT-Xent over the global batch.

No predictor and no target branch: both views go through the online f and g and
every other view of the (global) batch is a negative (SimCLR Eq. 1).
"""

import keras

import backends
from models import contrastive_losses
from models.base import SSLModel


@keras.saving.register_keras_serializable(package="nc_ssl")
class SimCLR(SSLModel):
    """SimCLR with ``config.temperature``; negatives gathered across replicas."""

    def compute_ssl_loss(self, x1, x2, labels=None, training=True):
        z1 = self.project(x1, training=training)
        z2 = self.project(x2, training=training)
        backend = backends.get()
        loss = contrastive_losses.nt_xent(
            z1, z2, temperature=self.config.temperature,
            all_gather=backend.cross_replica_gather, replica_offset=backend.replica_offset(z1))
        return loss, {"z1": z1, "z2": z2}
