"""SiameseNetwork: BYOL, SimSiam, DirectPred and DirectCopy as one Keras model.

One ``train_step`` serves every variant (Tian, Chen & Ganguli 2021, Sec. 2):

    views -> online encoder f + projector g -> z1, z2 -> predictor q -> p1, p2
    target: EMA copy of f, g (BYOL, tau > 0) or the online z under stop-gradient
    (SimSiam, tau = 0) -> t1, t2
    loss = L(p1, sg(t2)) + L(p2, sg(t1)),  L = 2 - 2 cos      (float32)
    grads (+ coupled L2 weight decay) -> optimizer
    after the step: F <- rho F + (1 - rho) E[z z^T];
                    Wp <- DirectPred / DirectCopy(F) every ``freq`` steps;
                    symmetry regularisation; EMA of the target.

The variant is chosen by the :class:`config.Config` fields ``predictor``,
``ema_tau``, ``symmetry``; nothing else differs. Everything after the gradient
step runs inside the same ``tf.function`` (no host round-trip).
"""

import math

import keras
import tensorflow as tf

from config import Config
from models import backbones, heads, losses, predictors
from models.metrics import normalized_std

#: Regex matching the variable paths of the predictor head (its layers are
#: named "predictor_*"); these get the predictor learning rate.
PREDICTOR_VARIABLES = "predictor_.*"

_POLICIES = {"none": None, "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}


def dtype_policy(mixed_precision):
    """Keras dtype policy name for ``Config.mixed_precision`` (``None`` = float32)."""
    if mixed_precision not in _POLICIES:
        raise ValueError(f"Unknown mixed_precision {mixed_precision!r}. "
                         f"Valid: {sorted(_POLICIES)}")
    return _POLICIES[mixed_precision]


def ema_tau(base_tau, step, total_steps, schedule="constant"):
    """EMA rate at ``step``: constant, or BYOL's cosine increase to 1 (BYOL Sec. 3.2):
    ``tau_k = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2``."""
    if schedule == "constant":
        return tf.constant(base_tau, tf.float32)
    progress = tf.cast(step, tf.float32) / tf.maximum(tf.cast(total_steps, tf.float32), 1.0)
    progress = tf.minimum(progress, 1.0)
    return 1.0 - (1.0 - base_tau) * (tf.cos(math.pi * progress) + 1.0) / 2.0


def build_optimizer(config):
    """SGD with momentum (the paper's recipe). With ``predictor_lr_multiplier != 1``
    the predictor gets its own SGD through ``keras.optimizers.MultiOptimizer``
    (stable symmetric SimSiam uses 10x)."""
    base = keras.optimizers.SGD(config.learning_rate, momentum=config.momentum)
    if config.predictor_lr_multiplier == 1.0:
        return base
    fast = keras.optimizers.SGD(config.learning_rate * config.predictor_lr_multiplier,
                                momentum=config.momentum)
    return keras.optimizers.MultiOptimizer(
        keras.optimizers.OptimizerMap(base, {PREDICTOR_VARIABLES: fast}))



@keras.saving.register_keras_serializable(package="nc_ssl")
class SiameseNetwork(keras.Model):
    """Online network, target branch and predictor updates of one SSL method.

    Args:
        config: a :class:`config.Config` (or its dict form).

    ``fit`` takes batches of two views ``(x1, x2)`` (optionally with labels,
    which are ignored), or, with ``config.augment_on == "device"``, batches of
    raw images that are augmented twice inside the step. ``call(images)``
    returns the online encoder's pooled features.
    """

    def __init__(self, config, **kwargs):
        if isinstance(config, dict):
            config = Config.from_dict(config)
        if not isinstance(config, Config):
            raise ValueError(f"SiameseNetwork needs a Config. Received: {type(config).__name__}")
        policy = dtype_policy(config.mixed_precision)
        kwargs.setdefault("name", "siamese_network")
        if policy is not None:
            kwargs.setdefault("dtype", policy)
        super().__init__(**kwargs)
        self.config = config
        self.online_encoder = backbones.build_encoder(config, dtype=policy,
                                                      name="online_encoder")
        feature_dim = self.online_encoder.output.shape[-1]
        self.online_projector = heads.projector(
            feature_dim, hidden_dim=config.projector_hidden_dim,
            output_dim=config.projection_dim, kind=config.projector, dtype=policy,
            name="online_projector")
        self.predictor = heads.predictor(
            config.projection_dim, hidden_dim=config.predictor_hidden_dim,
            kind=config.predictor, dtype=policy, name="predictor")
        self.target_encoder = self.target_projector = None
        if config.uses_ema:
            self.target_encoder = backbones.build_encoder(config, dtype=policy,
                                                          name="target_encoder")
            self.target_projector = heads.projector(
                feature_dim, hidden_dim=config.projector_hidden_dim,
                output_dim=config.projection_dim, kind=config.projector, dtype=policy,
                name="target_projector")
            for target, online in self._ema_pairs():
                target.assign(online)
            for network in (self.target_encoder, self.target_projector):
                network.trainable = False
                # The target's BN statistics are the EMA of the online ones only:
                # a forward pass in training mode (batch statistics) must not move them.
                for layer in network.layers:
                    if isinstance(layer, keras.layers.BatchNormalization):
                        layer.momentum = 1.0
        d = config.projection_dim
        self.correlation = self.add_weight(shape=(d, d), initializer="zeros",
                                           trainable=False, dtype="float32",
                                           name="correlation")
        self.correlation_mean = self.add_weight(shape=(d,), initializer="zeros",
                                                trainable=False, dtype="float32",
                                                name="correlation_mean")
        self.step_counter = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                            dtype="int64", name="step_counter")
        self.total_steps = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                           dtype="int64", name="total_steps")
        self._augment_params = None
        if config.augment_on == "device":
            from data_processing.augmentations import AugmentParams
            self._augment_params = AugmentParams.from_config(config)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.z_std_tracker = keras.metrics.Mean(name="z_std")
        self.built = True

    # ---- structure --------------------------------------------------------
    def _ema_pairs(self):
        """(target, online) variable pairs: every weight incl. BN statistics."""
        pairs = []
        for target, online in ((self.target_encoder, self.online_encoder),
                               (self.target_projector, self.online_projector)):
            pairs.extend(zip(target.weights, online.weights))
        return pairs

    @property
    def metrics(self):
        return [self.loss_tracker, self.z_std_tracker]

    @property
    def predictor_kernel(self):
        """Kernel of a linear predictor (``Wp^T``); ``None`` for an MLP predictor."""
        if self.config.predictor == "mlp":
            return None
        return heads.dense_kernels(self.predictor)[0]

    def _trainable_with_decay(self):
        config = self.config
        pred_wd = (config.weight_decay if config.predictor_weight_decay is None
                   else config.predictor_weight_decay)
        pairs = [(v, config.weight_decay) for v in self.online_encoder.trainable_variables]
        pairs += [(v, config.weight_decay) for v in self.online_projector.trainable_variables]
        pairs += [(v, pred_wd) for v in self.predictor.trainable_variables]
        return pairs

    def call(self, images, training=False):
        return self.online_encoder(images, training=training)

    def set_total_steps(self, steps):
        """Length of training in steps, for the cosine EMA schedule."""
        self.total_steps.assign(int(steps))

    # ---- one step ----------------------------------------------------------
    def _two_views(self, data):
        if isinstance(data, (tuple, list)):
            data = tuple(d for d in data if d is not None)  # train_on_batch pads with None
            if len(data) == 1:
                data = data[0]
        if isinstance(data, (tuple, list)) and isinstance(data[0], (tuple, list)):
            data = data[0]  # ((x1, x2), labels)
        if self._augment_params is not None:
            from data_processing.augmentations import augment_batch
            images = data[0] if isinstance(data, (tuple, list)) else data
            return (augment_batch(images, self._augment_params),
                    augment_batch(images, self._augment_params))
        if not (isinstance(data, (tuple, list)) and len(data) == 2):
            raise ValueError("SiameseNetwork.fit expects batches of two views (x1, x2), "
                             "or raw images with config.augment_on='device'. "
                             f"Received: {data!r}")
        return data[0], data[1]

    def _targets(self, x1, x2, z1, z2):
        if self.target_encoder is None:  # SimSiam: the online z under stop-gradient
            return tf.stop_gradient(z1), tf.stop_gradient(z2)
        t1 = self.target_projector(self.target_encoder(x1, training=True), training=True)
        t2 = self.target_projector(self.target_encoder(x2, training=True), training=True)
        return tf.stop_gradient(t1), tf.stop_gradient(t2)

    def compute_ssl_loss(self, x1, x2, training=True):
        """Forward both views; returns ``(loss, z1, z2)`` with the float32 loss."""
        z1 = self.online_projector(self.online_encoder(x1, training=training),
                                   training=training)
        z2 = self.online_projector(self.online_encoder(x2, training=training),
                                   training=training)
        p1 = self.predictor(z1, training=training)
        p2 = self.predictor(z2, training=training)
        t1, t2 = self._targets(x1, x2, z1, z2)
        return losses.symmetric_loss(p1, t2, p2, t1), z1, z2

    def train_step(self, data):
        x1, x2 = self._two_views(data)
        pairs = self._trainable_with_decay()
        variables = [v for v, _ in pairs]
        with tf.GradientTape() as tape:
            loss, z1, z2 = self.compute_ssl_loss(x1, x2, training=True)
            scaled_loss = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled_loss, variables)
        # Coupled L2 decay (torch SGD weight_decay): g <- g + wd * w, at the loss scale.
        scale = tf.cast(self.optimizer.scale_loss(tf.constant(1.0)), tf.float32)
        grads = [g if wd == 0 else g + tf.cast(wd * scale, g.dtype) * tf.cast(v, g.dtype)
                 for g, (v, wd) in zip(grads, pairs)]
        self.optimizer.apply(grads, variables)
        self._after_step(tf.concat([z1, z2], axis=0))
        self.loss_tracker.update_state(loss)
        self.z_std_tracker.update_state(normalized_std(z1))
        return {m.name: m.result() for m in self.metrics}

    def _after_step(self, z):
        """F accumulator, computed predictor, symmetry and EMA (Sec. 5, Eq. 17-18)."""
        config = self.config
        step = self.step_counter
        corr, mean = predictors.accumulate_correlation(
            self.correlation, z, config.corr_rho, step > 0, center=config.corr_center,
            mean=self.correlation_mean)
        self.correlation.assign(corr)
        if config.corr_center:
            self.correlation_mean.assign(mean)
        if config.computed_predictor:
            kernel = self.predictor_kernel

            def update():
                f = corr
                if config.corr_center:
                    f = predictors.centered_correlation(corr, mean)
                if config.predictor == "directpred":
                    w = predictors.direct_pred_weights(f, config.predictor_eps)
                else:
                    w = predictors.direct_copy_weights(f, config.predictor_eps)
                kernel.assign(tf.transpose(w))  # Keras kernel = Wp^T
                return tf.constant(True)

            tf.cond(tf.equal(step % config.predictor_freq, 0), update,
                    lambda: tf.constant(False))
        elif config.symmetry:
            kernels = heads.dense_kernels(self.predictor)
            if len(kernels) == 1:
                kernels[0].assign(predictors.symmetrize(kernels[0]))
            else:
                k1, k2 = predictors.symmetrize_two_layer(kernels[0], kernels[1])
                kernels[0].assign(k1)
                kernels[1].assign(k2)
        if self.target_encoder is not None:
            tau = ema_tau(config.ema_tau, step, self.total_steps, config.ema_schedule)
            for target, online in self._ema_pairs():
                target.assign(tau * target + (1.0 - tau) * online)
        self.step_counter.assign_add(1)

    # ---- serialisation -----------------------------------------------------
    def get_config(self):
        return {"config": self.config.to_dict(), "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(Config.from_dict(config["config"]), name=config.get("name"))
