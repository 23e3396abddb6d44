"""SiameseNetwork: BYOL, SimSiam, DirectPred, DirectCopy, DirectSet, the closed-form
predictors and IsoLoss as one Keras model.

The non-contrastive four differ only in their predictor and target
(Tian, Chen & Ganguli 2021, Sec. 2 and 4), over the shared step of :class:`SSLModel`:

    z1, z2 -> predictor q -> p1, p2
    target: EMA copy of f, g (BYOL, tau > 0) or the online z under stop-gradient
    (SimSiam, tau = 0) -> t1, t2
    loss = L(p1, sg(t2)) + L(p2, sg(t1)),  L = 2 - 2 cos      (float32)
    (IsoLoss: the same value, the gradient reaching z without Wp^T)
    after the step: F <- rho F + (1 - rho) E[z z^T];
                    Wp <- rule(F) every ``freq`` steps (an EMA of it for the closed-form
                    predictors with ``closed_form_ema``; trained by
                    the optimizer in between, as any layer, when freq > 1);
                    symmetry regularisation; EMA of the target.

The variant is chosen by the :class:`config.Config` fields ``predictor``,
``ema_tau``, ``symmetry``; nothing else differs.
"""

import keras
from keras import ops

import backends
from models import heads, losses, network_constants, predictors
from models.base import SSLModel
from models.optimizers import predictor_weight_decay


@keras.saving.register_keras_serializable(package="nc_ssl")
class SiameseNetwork(SSLModel):
    """Online network, target branch and predictor updates of one non-contrastive method.

    Args:
        config: a :class:`config.Config` (or its dict form) with
            ``method == "noncontrastive"``.
    """

    def __init__(self, config, **kwargs):
        kwargs.setdefault("name", "siamese_network")
        super().__init__(config, **kwargs)
        config = self.config
        # A computed Wp is trained between two settings when freq > 1 (paper Sec. 4).
        trained_between = (config.computed_predictor and config.predictor_freq > 1
                           and config.predictor_trained_between)
        self.predictor = network_constants.apply(heads.predictor(
            config.projection_dim, hidden_dim=config.predictor_hidden_dim,
            kind=config.predictor, dtype=self.policy, name="predictor",
            bn_affine=config.predictor_bn_affine, trainable=trained_between), config)
        d = config.projection_dim
        self.correlation = self.add_state("correlation", (d, d))
        self.correlation_mean = self.add_state("correlation_mean", (d,))
        # The pure rule F -> Wp of a computed predictor (DirectPred, DirectCopy).
        self._predictor_rule = (predictors.predictor_rule(config)
                                if config.computed_predictor else None)

    @classmethod
    def wants_target(cls, config):
        return config.uses_ema

    @property
    def predictor_kernel(self):
        """Kernel of a linear predictor (``Wp^T``); ``None`` for an MLP predictor."""
        if self.config.predictor == "mlp":
            return None
        return heads.dense_kernels(self.predictor)[0]

    def trainable_with_decay(self):
        pred_wd = predictor_weight_decay(self.config)
        return super().trainable_with_decay() + [
            (v, pred_wd) for v in self.predictor.trainable_variables]

    def _targets(self, x1, x2, z1, z2):
        if self.target_encoder is None:  # SimSiam: the online z under stop-gradient
            return ops.stop_gradient(z1), ops.stop_gradient(z2)
        return self.target_project(x1), self.target_project(x2)

    def compute_ssl_loss(self, x1, x2, labels=None, training=True):
        """Forward both views; returns the float32 loss and ``{"z1", "z2"}``."""
        z1 = self.project(x1, training=training)
        z2 = self.project(x2, training=training)
        if self.config.isoloss:  # the gradient reaches z without Wp^T (IsoLoss)
            p1 = losses.isotropic_prediction(self.predictor, z1, training)
            p2 = losses.isotropic_prediction(self.predictor, z2, training)
        else:
            p1 = self.predictor(z1, training=training)
            p2 = self.predictor(z2, training=training)
        t1, t2 = self._targets(x1, x2, z1, z2)
        loss_fn = losses.symmetric_l2_loss if self.config.loss == "l2" else losses.symmetric_loss
        return loss_fn(p1, t2, p2, t1), {"z1": z1, "z2": z2}

    def after_step(self, outputs):
        """F accumulator, computed predictor, symmetry and EMA (Sec. 4, Eqns. 18-19).

        F is estimated from the global batch (gathered across replicas) and stored
        with the first replica's value on every replica of a worker (``add_state``),
        so every replica computes Wp from the same F. The computed predictor is the
        pure rule ``F -> Wp`` of ``config.predictor`` (:data:`predictors.PREDICTOR_RULES`,
        looked up once in ``__init__``), applied every ``predictor_freq`` steps.
        """
        config = self.config
        step = self.step_counter
        z = backends.get().cross_replica_gather(
            ops.concatenate([outputs["z1"], outputs["z2"]], axis=0))
        corr, mean = predictors.accumulate_correlation(
            self.correlation, z, config.corr_rho, step > 0, center=config.corr_center,
            mean=self.correlation_mean)
        self.correlation.assign(corr)
        if config.corr_center:
            self.correlation_mean.assign(mean)
        # Read back: the stored (first replica's) values.
        corr = ops.convert_to_tensor(self.correlation)
        mean = ops.convert_to_tensor(self.correlation_mean)
        if self._predictor_rule is not None:
            kernel = self.predictor_kernel
            rule = self._predictor_rule

            def update():
                f = predictors.centered_correlation(corr, mean) if config.corr_center else corr
                new = ops.cast(ops.transpose(rule(f)), kernel.dtype)  # Keras kernel = Wp^T
                if config.predictor == "closed_form" and config.closed_form_ema > 0.0:
                    # EMA of Wp (Richemond et al. 2023, Sec. 6); the first setting is rule(F).
                    rate = config.closed_form_ema
                    new = ops.where(step > 0, rate * ops.convert_to_tensor(kernel)
                                    + (1.0 - rate) * new, new)
                return new

            kernel.assign(ops.cond(ops.equal(step % config.predictor_freq, 0), update,
                                   lambda: ops.convert_to_tensor(kernel)))
        elif config.symmetry:
            kernels = heads.dense_kernels(self.predictor)
            if len(kernels) == 1:
                kernels[0].assign(predictors.symmetrize(kernels[0]))
            else:
                k1, k2 = predictors.symmetrize_two_layer(kernels[0], kernels[1])
                kernels[0].assign(k1)
                kernels[1].assign(k2)
        self.update_target()
