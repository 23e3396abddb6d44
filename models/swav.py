"""SwAV (Caron et al. 2020, Sec. 3.1): swapped prediction of online cluster codes.

Projections are l2-normalised and scored against ``config.num_prototypes``
normalised prototypes; codes q come from Sinkhorn-Knopp (``sinkhorn_iterations``,
``sinkhorn_epsilon``, float32, stop-gradient), and each view predicts the other
view's code with a softmax at ``config.temperature``. Prototypes are re-normalised
after every step and get no gradient during the first ``freeze_prototypes_epochs``
epochs. With ``queue_size > 0``, embeddings of earlier batches join the Sinkhorn
batch from epoch ``queue_start_epoch`` on (SwAV's small-batch queue).
"""

import keras
from keras import layers, ops

import backends
from models import contrastive_losses
from models.base import SSLModel
from models.ops_util import l2_normalize

PROTOTYPES = "prototypes"


@keras.saving.register_keras_serializable(package="nc_ssl")
class SwAV(SSLModel):
    """SwAV with a prototype layer, Sinkhorn codes and an optional queue."""

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        config = self.config
        inputs = keras.Input((config.projection_dim,), name="z")
        outputs = layers.Dense(config.num_prototypes, use_bias=False, dtype=self.policy,
                               name=f"{PROTOTYPES}_dense")(inputs)
        self.prototypes = keras.Model(inputs, outputs, name=PROTOTYPES)
        self.normalize_prototypes()
        size = max(config.queue_size, 1)
        self.queue = self.add_state("queue", (2, size, config.projection_dim))
        self.queue_count = self.add_state("queue_count", (), "int64")

    @property
    def prototype_kernel(self):
        return self.prototypes.layers[-1].kernel  # [dim, num_prototypes]

    def normalize_prototypes(self):
        """Each prototype (a kernel column) to unit length (SwAV Sec. 3.1)."""
        kernel = self.prototype_kernel
        kernel.assign(l2_normalize(ops.convert_to_tensor(kernel), axis=0))

    def trainable_with_decay(self):
        wd = self.config.weight_decay
        return super().trainable_with_decay() + [
            (v, wd) for v in self.prototypes.trainable_variables]

    def _queue_active(self):
        config = self.config
        if config.queue_size == 0:
            return ops.convert_to_tensor(False)
        started = self.step_counter >= config.queue_start_epoch * self.steps_per_epoch
        return ops.logical_and(started, self.queue_count >= config.queue_size)

    def compute_ssl_loss(self, x1, x2, labels=None, training=True):
        config = self.config
        z1 = self.project(x1, training=training)
        z2 = self.project(x2, training=training)
        e1 = l2_normalize(ops.cast(z1, "float32"), axis=-1)
        e2 = l2_normalize(ops.cast(z2, "float32"), axis=-1)
        s1 = self.prototypes(e1, training=training)
        s2 = self.prototypes(e2, training=training)
        queue_scores = [None, None]
        if config.queue_size > 0:
            kernel = ops.stop_gradient(ops.cast(self.prototype_kernel, "float32"))
            # Row weight 0 keeps an inactive queue out of the Sinkhorn batch; every
            # replica holds the same (gathered) queue, so it counts 1/R per replica.
            weight = ops.cast(self._queue_active(), "float32") / backends.get().num_replicas()
            queue_scores = [(ops.matmul(self.queue[i], kernel), weight) for i in range(2)]
        loss = contrastive_losses.swav_loss(
            s1, s2, temperature=config.temperature, epsilon=config.sinkhorn_epsilon,
            iterations=config.sinkhorn_iterations, queue_scores1=queue_scores[0],
            queue_scores2=queue_scores[1], all_reduce_sum=backends.get().cross_replica_sum)
        return loss, {"z1": z1, "z2": z2, "embeddings": ops.stack([e1, e2])}

    def adjust_gradients(self, grads, variables):
        """No gradient for the prototypes during the first epochs."""
        frozen = self.step_counter < (self.config.freeze_prototypes_epochs
                                      * self.steps_per_epoch)
        keep = 1.0 - ops.cast(frozen, "float32")
        ids = {id(v) for v in self.prototypes.trainable_variables}
        return [g * ops.cast(keep, g.dtype) if id(v) in ids else g
                for g, v in zip(grads, variables)]

    def after_step(self, outputs):
        self.normalize_prototypes()
        if self.config.queue_size > 0:
            self.enqueue(outputs["embeddings"])
        self.update_target()

    def enqueue(self, embeddings):
        """Newest embeddings (of the global batch) first, oldest dropped."""
        gather = backends.get().cross_replica_gather
        embeddings = ops.stack([gather(embeddings[i]) for i in range(2)])
        size = self.config.queue_size
        n = ops.shape(embeddings)[1]
        merged = ops.concatenate([embeddings, self.queue], axis=1)[:, :size]
        self.queue.assign(merged)
        count = self.queue_count
        self.queue_count.assign(ops.minimum(count + ops.cast(n, count.dtype), size))
