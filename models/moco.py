"""MoCo v2 (He et al. 2020; Chen, Fan, Girshick & He 2020): momentum key encoder
and a queue of negatives.

Queries come from the online f and g, keys from their EMA copy (``config.ema_tau``
is the momentum m). The loss is InfoNCE (MoCo Eq. 1) with ``config.temperature``
against the positive key and the ``config.queue_size`` keys in the queue,
symmetrised over the two views and averaged, ``(L(q1, k2) + L(q2, k1)) / 2``, as
solo-learn's "mocov2plus" (the official CIFAR-10 demo sums the two terms). After
each step the keys of the global batch are enqueued (FIFO) in a non-trainable
variable.

Shuffling BN: on one device the key encoder's BN uses the whole batch, and
under a distribution strategy BatchNorm is synchronised across replicas, which is
the "synchronised BN" alternative to MoCo's shuffled per-GPU BN (MoCo v3 uses it).
"""

import keras
from keras import ops

import backends
from models import contrastive_losses
from models.base import SSLModel
from models.ops_util import l2_normalize


@keras.saving.register_keras_serializable(package="nc_ssl")
class MoCo(SSLModel):
    """MoCo v2 with a queue of ``config.queue_size`` normalised keys."""

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        size, dim = self.config.queue_size, self.config.projection_dim
        self.queue = self.add_state("queue", (size, dim),
                                    initializer=_normalised_normal(self.config.seed))
        self.queue_pointer = self.add_state("queue_pointer", (), "int64")

    @classmethod
    def wants_target(cls, config):
        return True

    def compute_ssl_loss(self, x1, x2, labels=None, training=True):
        q1 = self.project(x1, training=training)
        q2 = self.project(x2, training=training)
        k1, k2 = self.target_project(x1), self.target_project(x2)
        loss = 0.5 * contrastive_losses.moco_symmetric_loss(
            q1, q2, k1, k2, self.queue, temperature=self.config.temperature)
        return loss, {"z1": q1, "z2": q2, "keys": (k1, k2)}

    def after_step(self, outputs):
        """Enqueue the keys of the global batch used in this step's loss (MoCo
        Alg. 1), then move the key encoder. Each view is gathered on its own, so
        that the queue holds ``[K1; K2]`` of the global batch in the same order on
        any number of replicas."""
        gather = backends.get().cross_replica_gather
        self.enqueue(ops.concatenate([gather(k) for k in outputs["keys"]], axis=0))
        self.update_target()

    def enqueue(self, keys):
        """FIFO update: the newest keys overwrite the oldest, wrapping around (of
        more keys than slots, only the newest ``queue_size`` are written)."""
        size = self.config.queue_size
        keys = l2_normalize(ops.cast(keys, "float32"), axis=-1)
        n = ops.shape(keys)[0]
        written = keys[-size:]
        kept = ops.shape(written)[0]
        # int32 index arithmetic (JAX has no int64 without x64; queue_size < 2**31).
        pointer = ops.cast(self.queue_pointer, "int32")
        index = (pointer + (n - kept) + ops.arange(kept, dtype="int32")) % size
        self.queue.assign(ops.scatter_update(self.queue, index[:, None], written))
        self.queue_pointer.assign(ops.cast((pointer + n) % size, self.queue_pointer.dtype))


def _normalised_normal(seed):
    def initializer(shape, dtype=None):
        x = keras.random.normal(shape, seed=seed, dtype="float32")
        return l2_normalize(x, axis=-1)
    return initializer
