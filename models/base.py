"""Shared training mechanics of every self-supervised method: one train step.

A method is a small subclass of :class:`SSLModel` that adds its own heads and
state and says how two views become a loss (solo-learn's layout: one small file
per method over a shared base). The base owns what every method shares:

    views (two augmented batches, labels optional; or raw images augmented
    inside the step)
    -> online encoder f -> projector g -> z1, z2
    -> method loss (float32), outputs  [``compute_ssl_loss``]
    -> grads (+ coupled L2 decay for SGD) -> optimizer
    -> after-step updates              [``after_step``: EMA target, method state]
    -> metrics: loss, z_std (collapse monitor)

and, for methods with a momentum target (BYOL, MoCo), the EMA copy of f and g.
Everything runs inside the compiled train step: no host round-trip.

Multi-device training (``tf.distribute``; the model is built under
``strategy.scope()``). ``train_step`` runs once per replica (replica context) on
its share of the global batch, and every replica must end the step with
bit-identical variables:

* gradients: each replica's loss is its share of the global mean (divided by
  the number of replicas); the optimizer sums the gradients over replicas and
  applies the same update on every replica. The gradients of
  ``cross_replica_gather`` / ``cross_replica_sum`` (:mod:`backends`) are themselves
  all-reduced (TensorFlow's ``all_gather`` / ``all_reduce`` gradients), so
  losses over the gathered global batch get exact global-batch gradients.
* method state (step counter, F, queues, ...) is made with :meth:`SSLModel.add_state`:
  ``aggregation="only_first_replica"``, so an assignment in replica context
  writes the value of the worker's first replica to all its replicas (a local
  broadcast, no cross-host traffic).
* layer weights updated after the step (EMA target, DirectPred's Wp, SwAV's
  prototypes, BatchNorm statistics) keep Keras's ``aggregation="none"``: an
  assignment in replica context writes the replica's own copy.
* in both cases every replica computes the same value anyway, from mirrored
  variables and globally reduced inputs (synchronised BN, the gathered global
  batch), exactly as the optimizer applies the same all-reduced gradient on
  every replica; this is what keeps the workers of a multi-host run identical.
* the ``loss`` and ``z_std`` metrics are those of the global batch, the same on
  every replica.
"""

import math

import keras
from keras import ops

import backends
from config import Config
from models import backbones, heads, network_constants
from models.metrics import normalized_std
from models.optimizers import uses_coupled_weight_decay

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
        return ops.convert_to_tensor(base_tau, "float32")
    progress = ops.cast(step, "float32") / ops.maximum(ops.cast(total_steps, "float32"), 1.0)
    progress = ops.minimum(progress, 1.0)
    return 1.0 - (1.0 - base_tau) * (ops.cos(math.pi * progress) + 1.0) / 2.0


class SSLModel(keras.Model):
    """Encoder + projector, optional EMA target, and the one train step.

    Subclasses override :meth:`wants_target` when they keep an EMA copy, create
    their heads and state (:meth:`add_state`) in ``__init__`` after
    ``super().__init__``, and implement
    :meth:`compute_ssl_loss`; they may extend :meth:`trainable_with_decay`,
    :meth:`adjust_gradients` and :meth:`after_step`.

    Args:
        config: a :class:`config.Config` (or its dict form).

    ``fit`` takes batches of two views ``(x1, x2)``, ``((x1, x2), labels)``, or
    with ``config.augment_on == "device"`` raw images (``images`` or
    ``(images, labels)``) that are augmented twice inside the step.
    ``call(images)`` returns the online encoder's pooled features.
    """

    #: Whether the method needs labels in its training batches (SupCon).
    needs_labels = False

    def __init__(self, config, **kwargs):
        if isinstance(config, dict):
            config = Config.from_dict(config)
        if not isinstance(config, Config):
            raise ValueError(f"{type(self).__name__} needs a Config. "
                             f"Received: {type(config).__name__}")
        policy = dtype_policy(config.mixed_precision)
        kwargs.setdefault("name", config.method)
        if policy is not None:
            kwargs.setdefault("dtype", policy)
        super().__init__(**kwargs)
        self.config = config
        self.policy = policy
        self.online_encoder = backbones.build_encoder(config, dtype=policy,
                                                      name="online_encoder")
        self.feature_dim = int(self.online_encoder.output.shape[-1])
        self.online_projector = self.build_projector("online_projector")
        self.target_encoder = self.target_projector = None
        if self.wants_target(config):
            self._build_target()
        self.step_counter = self.add_state("step_counter", (), "int64")
        self.total_steps = self.add_state("total_steps", (), "int64")
        self.steps_per_epoch = self.add_state("steps_per_epoch", (), "int64")
        self._augment_params = None
        if config.augment_on == "device":
            from data_processing.augment_ops import AugmentParams
            self._augment_params = AugmentParams.from_config(config)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.z_std_tracker = keras.metrics.Mean(name="z_std")
        self.built = True

    # ---- structure --------------------------------------------------------
    def add_state(self, name, shape, dtype="float32", initializer="zeros"):
        """A non-trainable state variable updated inside the train step. Under a
        distribution strategy an assignment in replica context writes the value of
        the worker's first replica to all its replicas
        (``aggregation="only_first_replica"``), so they cannot drift apart."""
        return self.add_weight(shape=shape, initializer=initializer, trainable=False,
                               dtype=dtype, aggregation="only_first_replica", name=name)

    @classmethod
    def wants_target(cls, config):
        """True when the method keeps an EMA (momentum) copy of f and g."""
        return False

    def build_projector(self, name):
        config = self.config
        return network_constants.apply(
            heads.projector(self.feature_dim, hidden_dim=config.projector_hidden_dim,
                            output_dim=config.projection_dim, kind=config.projector,
                            dtype=self.policy, name=name), config)

    def _build_target(self):
        self.target_encoder = backbones.build_encoder(self.config, dtype=self.policy,
                                                      name="target_encoder")
        self.target_projector = self.build_projector("target_projector")
        if self.config.target_init == "copy":
            for target, online in self.ema_pairs():
                # A copy: under JAX the two variables must not share one buffer
                # (the jitted step donates every state buffer once).
                target.assign(ops.copy(online.value))
        for network in (self.target_encoder, self.target_projector):
            network.trainable = False
            # The target's BN statistics are the EMA of the online ones only:
            # a forward pass in training mode (batch statistics) must not move them.
            for layer in network.layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.momentum = 1.0

    def ema_pairs(self):
        """(target, online) variable pairs: every weight incl. BN statistics."""
        pairs = []
        for target, online in ((self.target_encoder, self.online_encoder),
                               (self.target_projector, self.online_projector)):
            pairs.extend(zip(target.weights, online.weights))
        return pairs

    @property
    def metrics(self):
        return [self.loss_tracker, self.z_std_tracker]

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Keras's TF trainer builds a model made under a strategy from a sample batch
        averaged across replicas, which fails for batches of views under
        ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585). This model is built
        in ``__init__`` and compiled without loss or metrics: only the optimizer is
        left to build, in the model's strategy scope, as Keras would."""
        if self._distribute_strategy is None:
            return  # one device: Keras builds the optimizer on the first step
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)

    def trainable_with_decay(self):
        """``(variable, weight decay)`` of every trained variable; methods add heads."""
        wd = self.config.weight_decay
        return [(v, wd) for v in self.online_encoder.trainable_variables
                + self.online_projector.trainable_variables]

    def call(self, images, training=False):
        return self.online_encoder(images, training=training)

    def set_total_steps(self, steps, steps_per_epoch=None):
        """Length of training in steps (cosine EMA) and of one epoch (SwAV's frozen
        prototypes and queue start)."""
        self.total_steps.assign(int(steps))
        if steps_per_epoch is not None:
            self.steps_per_epoch.assign(int(steps_per_epoch))

    def project(self, x, training=True):
        """``z = g(f(x))`` of the online branch."""
        return self.online_projector(self.online_encoder(x, training=training),
                                     training=training)

    def target_project(self, x):
        """``g'(f'(x))`` of the EMA target, under stop-gradient (BN in batch mode)."""
        t = self.target_projector(self.target_encoder(x, training=True), training=True)
        return ops.stop_gradient(t)

    # ---- one step ----------------------------------------------------------
    def unpack_batch(self, data):
        """``(x1, x2, labels or None)`` from any accepted batch form."""
        if isinstance(data, (tuple, list)):
            data = tuple(d for d in data if d is not None)  # train_on_batch pads with None
            if len(data) == 1:
                data = data[0]
        labels = None
        if self._augment_params is not None:
            images = data
            if isinstance(data, (tuple, list)):
                images, labels = data[0], (data[1] if len(data) > 1 else None)
            # Stateless draws from (seed, step; TF: and the replica), so a run restored
            # with its step counter draws the same views. The same recipe
            # (data_processing.augment_ops) on both backends, different generators.
            x1, x2 = backends.get().augmented_views(images, self._augment_params,
                                                    self.config.seed, self.step_counter)
        else:
            if (isinstance(data, (tuple, list)) and len(data) == 2
                    and isinstance(data[0], (tuple, list))):
                data, labels = data  # ((x1, x2), labels)
            if not (isinstance(data, (tuple, list)) and len(data) == 2):
                raise ValueError(f"{type(self).__name__}.fit expects batches of two views "
                                 "(x1, x2) or ((x1, x2), labels), or raw images with "
                                 f"config.augment_on='device'. Received: {data!r}")
            x1, x2 = data
        if self.needs_labels and labels is None:
            raise ValueError(f"{type(self).__name__} needs labels: batches of "
                             "((x1, x2), labels). Received batches without labels.")
        return x1, x2, labels

    def compute_ssl_loss(self, x1, x2, labels=None, training=True):
        """Returns ``(loss, outputs)``: the float32 loss and a dict with at least the
        online projections ``z1``, ``z2`` (and whatever :meth:`after_step` needs)."""
        raise NotImplementedError

    def adjust_gradients(self, grads, variables):
        """Hook to modify gradients before the update (e.g. frozen prototypes)."""
        return grads

    def train_step(self, *args):
        """One training step, in the order of the module docstring: the backend's
        ``train_step`` (:mod:`backends`): ``train_step(data)``, a GradientTape step,
        under TensorFlow; ``train_step(state, data)``, a stateless step, under JAX."""
        return backends.get().train_step(self, *args)

    def decayed_gradients(self, grads, pairs):
        """Coupled L2 decay (torch SGD ``weight_decay``) for ``sgd``:
        ``g <- g + wd * w``, at the loss scale and per replica (the replicas' sum adds
        it once); the gradients unchanged for every other optimizer. ``pairs``: the
        ``(variable, wd)`` of :meth:`trainable_with_decay`, aligned with ``grads``."""
        if not uses_coupled_weight_decay(self.config):
            return grads
        scale = ops.cast(self.optimizer.scale_loss(ops.convert_to_tensor(1.0)), "float32")
        scale = scale / backends.get().num_replicas()
        return [g if wd == 0 else g + ops.cast(wd * scale, g.dtype) * ops.cast(v, g.dtype)
                for g, (v, wd) in zip(grads, pairs)]

    def finish_step(self, loss, outputs):
        """Everything after the optimizer update, on the updated variables: the
        after-step updates (:meth:`after_step`), the step counter, then the metrics
        of the global batch (the same on every replica). Returns the logs."""
        self.after_step(outputs)
        self.step_counter.assign_add(1)
        backend = backends.get()
        self.loss_tracker.update_state(backend.cross_replica_sum(loss) / backend.num_replicas())
        self.z_std_tracker.update_state(
            normalized_std(backend.cross_replica_gather(outputs["z1"])))
        return {m.name: m.result() for m in self.metrics}

    def after_step(self, outputs):
        """Updates after the gradient step (``outputs`` of :meth:`compute_ssl_loss`);
        the base moves the EMA target."""
        self.update_target()

    def update_target(self):
        """``theta' <- tau theta' + (1 - tau) theta`` for every target variable."""
        if self.target_encoder is None:
            return
        config = self.config
        tau = ema_tau(config.ema_tau, self.step_counter, self.total_steps,
                      config.ema_schedule)
        for target, online in self.ema_pairs():
            target.assign(tau * target + (1.0 - tau) * online)

    # ---- serialisation -----------------------------------------------------
    def get_config(self):
        return {"config": self.config.to_dict(), "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(Config.from_dict(config["config"]), name=config.get("name"))
