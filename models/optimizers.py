"""Pre-training optimizers and learning-rate schedules, built from a :class:`config.Config`.

Optimizers (``Config.optimizer``):

* ``sgd``: momentum SGD, the paper's recipe. Its weight decay is *coupled* L2
  (``g <- g + wd w`` on every parameter, as torch's SGD), added to the gradients
  by the model's train step (see :func:`uses_coupled_weight_decay`).
* ``lars``: :class:`LARS` (You, Gitman & Ginsburg 2017, arXiv:1708.03888) in the
  form of SimCLR (Chen et al. 2020, App. B) and BYOL (Grill et al. 2020, App. C).
* ``larc``: :class:`LARC`, NVIDIA apex's clipped variant of LARS.
* ``adamw``: Adam with decoupled weight decay (Loshchilov & Hutter 2019).
* ``lamb``: LAMB (You et al. 2020, arXiv:1904.00962) as implemented by Keras.

Every optimizer except ``sgd`` applies its own weight decay, and excludes
BatchNorm parameters and biases (the 1-D variables) from it; LARS and LARC also
exclude them from the layer-wise adaptation (SimCLR / BYOL).

The predictor (variables whose path matches :data:`PREDICTOR_VARIABLES`) can get
its own learning-rate multiplier and weight decay: a second optimizer of the same
kind behind ``keras.optimizers.MultiOptimizer``.

Schedules (``Config.lr_schedule``): ``constant`` (the paper) or
``warmup_cosine`` (:class:`WarmupCosineDecay`: linear warm-up, then the cosine
decay of SGDR, Loshchilov & Hutter 2017, without restarts).
"""

import math

import keras
from keras import ops

#: Regex matching the variable paths of the predictor head (its layers are
#: named "predictor_*"); these get the predictor learning rate and weight decay.
PREDICTOR_VARIABLES = "predictor_.*"

#: Batch size at which ``Config.learning_rate`` is the rate under ``lr_scaling="linear"``.
REFERENCE_BATCH_SIZE = 256


def _decayed_and_adapted(variable):
    """LARS/LARC/AdamW/LAMB rule: BN parameters and biases (<= 1-D) are excluded."""
    return len(variable.shape) > 1


def _norm(x):
    return ops.sqrt(ops.sum(ops.square(x)))


# ---------------------------------------------------------------------------
# Learning-rate schedule
# ---------------------------------------------------------------------------

@keras.saving.register_keras_serializable(package="nc_ssl")
class WarmupCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up, then cosine decay (SGDR, Loshchilov & Hutter 2017, no restarts).

    With ``W = warmup_steps`` and ``T = total_steps``, the rate of optimizer step ``k``:

        k < W:  warmup_lr + (base_lr - warmup_lr) * k / W
        k >= W: final_lr + (base_lr - final_lr) * (1 + cos(pi * min((k - W) / (T - W), 1))) / 2

    so ``lr(0) = warmup_lr``, ``lr(W) = base_lr`` and ``lr(T) = final_lr`` (held
    after ``T``). As the schedule of SimSiam/BYOL re-implementations
    (``--warmup_epochs --warmup_lr --base_lr --final_lr``), per step.
    """

    def __init__(self, base_lr, total_steps, warmup_steps=0, warmup_lr=0.0, final_lr=0.0,
                 name="warmup_cosine_decay"):
        super().__init__()
        total_steps, warmup_steps = int(total_steps), int(warmup_steps)
        if total_steps < 0 or warmup_steps < 0 or warmup_steps > total_steps:
            raise ValueError("WarmupCosineDecay needs 0 <= warmup_steps <= total_steps. "
                             f"Received: warmup_steps={warmup_steps}, "
                             f"total_steps={total_steps}")
        self.base_lr = float(base_lr)
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.warmup_lr = float(warmup_lr)
        self.final_lr = float(final_lr)
        self.name = name

    def __call__(self, step):
        step = ops.cast(step, "float32")
        decay_steps = float(max(self.total_steps - self.warmup_steps, 1))
        progress = ops.clip((step - self.warmup_steps) / decay_steps, 0.0, 1.0)
        cosine = self.final_lr + 0.5 * (self.base_lr - self.final_lr) * (
            1.0 + ops.cos(math.pi * progress))
        if self.warmup_steps == 0:
            return cosine
        warmup = self.warmup_lr + (self.base_lr - self.warmup_lr) * step / self.warmup_steps
        return ops.where(step < self.warmup_steps, warmup, cosine)

    def get_config(self):
        return {"base_lr": self.base_lr, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "warmup_lr": self.warmup_lr,
                "final_lr": self.final_lr, "name": self.name}


# ---------------------------------------------------------------------------
# LARS / LARC
# ---------------------------------------------------------------------------

class _LayerwiseMomentumSGD(keras.optimizers.Optimizer):
    """Momentum SGD with a per-variable (layer-wise) adapted gradient.

    ``weight_decay`` here is the coupled L2 coefficient that LARS/LARC fold into
    the adapted gradient; it is kept away from Keras's own (decoupled)
    ``weight_decay`` mechanism.
    """

    def __init__(self, learning_rate, momentum, weight_decay, eta, nesterov, name,
                 **kwargs):
        kwargs.pop("weight_decay", None)
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1). Received: momentum={momentum!r}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0. Received: "
                             f"weight_decay={weight_decay!r}")
        if not eta > 0:
            raise ValueError(f"eta must be > 0. Received: eta={eta!r}")
        self.momentum = float(momentum)
        self.l2 = float(weight_decay)
        self.eta = float(eta)
        self.nesterov = bool(nesterov)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self.momentums = self.add_optimizer_variables(var_list, "momentum")

    def _step_inputs(self, gradient, variable, learning_rate):
        """``(dtype, lr, gradient, momentum buffer)`` of ``variable``, in its dtype."""
        dtype = variable.dtype
        return (dtype, ops.cast(learning_rate, dtype), ops.cast(gradient, dtype),
                self.momentums[self._get_variable_index(variable)])

    def get_config(self):
        config = super().get_config()
        config.update({"momentum": self.momentum, "weight_decay": self.l2, "eta": self.eta,
                       "nesterov": self.nesterov})
        return config


@keras.saving.register_keras_serializable(package="nc_ssl")
class LARS(_LayerwiseMomentumSGD):
    """Layer-wise Adaptive Rate Scaling (You et al. 2017), as in SimCLR App. B / BYOL App. C.

    For every variable ``w`` with more than one dimension:

        d = g + weight_decay * w
        trust = eta * ||w|| / ||d||        (1 if ||w|| = 0 or ||d|| = 0)
        v <- momentum * v + lr * trust * d;   w <- w - v

    (Nesterov: ``w <- w - (momentum * v + lr * trust * d)``). BatchNorm
    parameters and biases (<= 1-D) get neither weight decay nor adaptation:
    ``d = g, trust = 1``.
    """

    def __init__(self, learning_rate=0.1, momentum=0.9, weight_decay=0.0, eta=0.001,
                 nesterov=False, name="lars", **kwargs):
        super().__init__(learning_rate, momentum, weight_decay, eta, nesterov, name, **kwargs)

    def update_step(self, gradient, variable, learning_rate):
        dtype, lr, d, v = self._step_inputs(gradient, variable, learning_rate)
        if _decayed_and_adapted(variable):
            if self.l2:
                d = d + ops.cast(self.l2, dtype) * variable
            w_norm, d_norm = _norm(variable), _norm(d)
            positive = ops.logical_and(w_norm > 0, d_norm > 0)
            trust = ops.where(positive, self.eta * w_norm / ops.where(positive, d_norm, 1.0),
                              1.0)
            lr = lr * ops.cast(trust, dtype)
        momentum = ops.cast(self.momentum, dtype)
        self.assign(v, momentum * v + lr * d)
        if self.nesterov:
            self.assign_sub(variable, momentum * v + lr * d)
        else:
            self.assign_sub(variable, v)


@keras.saving.register_keras_serializable(package="nc_ssl")
class LARC(_LayerwiseMomentumSGD):
    """Layer-wise Adaptive Rate Control: NVIDIA apex's ``LARC`` around momentum SGD.

    For every variable ``w`` with more than one dimension and ``||w||, ||g|| > 0``:

        trust_lr = eta * ||w|| / (||g|| + weight_decay * ||w|| + epsilon)
        local = min(trust_lr / lr, 1)  (clip=True)   or   trust_lr  (clip=False)
        d = local * (g + weight_decay * w)

    else ``d = g``; then torch-style momentum SGD ``v <- momentum * v + d;
    w <- w - lr * v``. With clipping the step size is ``min(trust_lr, lr)``:
    the adaptation only ever lowers the rate, unlike :class:`LARS`. BatchNorm
    parameters and biases (<= 1-D) get neither weight decay nor adaptation.
    """

    def __init__(self, learning_rate=0.1, momentum=0.9, weight_decay=0.0, eta=0.001,
                 nesterov=False, clip=True, epsilon=1e-8, name="larc", **kwargs):
        super().__init__(learning_rate, momentum, weight_decay, eta, nesterov, name, **kwargs)
        self.clip = bool(clip)
        self.epsilon = float(epsilon)

    def update_step(self, gradient, variable, learning_rate):
        dtype, lr, d, v = self._step_inputs(gradient, variable, learning_rate)
        if _decayed_and_adapted(variable):
            l2 = ops.cast(self.l2, dtype)
            w_norm, g_norm = _norm(variable), _norm(d)
            trust_lr = self.eta * w_norm / (g_norm + l2 * w_norm + self.epsilon)
            if self.clip:
                # min(trust_lr / lr, 1); lr = 0 gives 1 (the step is 0 anyway).
                safe_lr = ops.where(lr > 0, lr, 1.0)
                local = ops.where(lr > 0, ops.minimum(trust_lr / safe_lr, 1.0), 1.0)
            else:
                local = trust_lr
            positive = ops.logical_and(w_norm > 0, g_norm > 0)
            d = ops.where(positive, ops.cast(local, dtype) * (d + l2 * variable), d)
        momentum = ops.cast(self.momentum, dtype)
        self.assign(v, momentum * v + d)
        if self.nesterov:
            self.assign_sub(variable, lr * (d + momentum * v))
        else:
            self.assign_sub(variable, lr * v)

    def get_config(self):
        config = super().get_config()
        config.update({"clip": self.clip, "epsilon": self.epsilon})
        return config


# ---------------------------------------------------------------------------
# AdamW / LAMB with BN parameters and biases excluded from weight decay
# ---------------------------------------------------------------------------

class _NoDecayOnBiasAndNorm:
    """Excludes <= 1-D variables from Keras's decoupled weight decay at build time."""

    def build(self, var_list):
        if not self.built:
            self.exclude_from_weight_decay(
                var_list=[v for v in var_list if not _decayed_and_adapted(v)])
        super().build(var_list)


@keras.saving.register_keras_serializable(package="nc_ssl")
class AdamW(_NoDecayOnBiasAndNorm, keras.optimizers.AdamW):
    """``keras.optimizers.AdamW`` (decoupled decay ``w <- w - lr * wd * w``,
    Loshchilov & Hutter 2019) without decay on BN parameters and biases."""


@keras.saving.register_keras_serializable(package="nc_ssl")
class Lamb(_NoDecayOnBiasAndNorm, keras.optimizers.Lamb):
    """``keras.optimizers.Lamb`` (You et al. 2020) without decay on BN parameters and
    biases. Keras applies the decay decoupled (``w <- w - lr * wd * w`` before the
    trust-ratio step) rather than inside the trust ratio as the paper's Alg. 2."""


# ---------------------------------------------------------------------------
# From a Config
# ---------------------------------------------------------------------------

def uses_coupled_weight_decay(config):
    """True for ``sgd``: the train step adds ``wd * w`` to the gradients (torch-style
    coupled L2, the paper's recipe). Every other optimizer applies its own decay,
    and the train step must not add it."""
    return config.optimizer == "sgd"


def predictor_weight_decay(config):
    """The predictor's weight decay: ``predictor_weight_decay``, or ``weight_decay`` if None."""
    if config.predictor_weight_decay is None:
        return config.weight_decay
    return config.predictor_weight_decay


def _batch_scale(config):
    """``batch_size / 256`` under ``lr_scaling="linear"``, else 1."""
    if config.lr_scaling == "linear":
        return config.batch_size / REFERENCE_BATCH_SIZE
    return 1.0


def learning_rate_schedule(config, steps_per_epoch=None, multiplier=1.0):
    """The learning rate of an optimizer: a float (``constant``) or a
    :class:`WarmupCosineDecay` over ``epochs_pretraining * steps_per_epoch`` steps.

    ``warmup_lr`` and ``final_lr`` follow the same scaling rule as the base rate;
    ``multiplier`` (the predictor's) scales all three, so the predictor follows
    the same schedule times its multiplier. A warm-up longer than training (a
    short smoke run of a long recipe) is cut to its length. ``steps_per_epoch``
    is needed by ``warmup_cosine`` only.
    """
    scale = multiplier * _batch_scale(config)
    base_lr = config.learning_rate * scale
    if config.lr_schedule == "constant":
        return base_lr
    if config.lr_schedule != "warmup_cosine":
        raise ValueError(f"Unknown lr_schedule {config.lr_schedule!r}. "
                         "Valid: ['constant', 'warmup_cosine']")
    if steps_per_epoch is None or int(steps_per_epoch) < 1:
        raise ValueError("lr_schedule='warmup_cosine' needs steps_per_epoch >= 1 (the "
                         "length of an epoch in optimizer steps). Received: "
                         f"steps_per_epoch={steps_per_epoch!r}")
    steps_per_epoch = int(steps_per_epoch)
    total = steps_per_epoch * config.epochs_pretraining
    warmup = min(steps_per_epoch * config.warmup_epochs, total)
    return WarmupCosineDecay(base_lr, total, warmup_steps=warmup,
                             warmup_lr=config.warmup_lr * scale,
                             final_lr=config.final_lr * scale)


def _single_optimizer(config, learning_rate, weight_decay):
    kind = config.optimizer
    momentum = float(config.momentum)
    if kind == "sgd":  # decay: coupled, added by the train step
        return keras.optimizers.SGD(learning_rate, momentum=momentum)
    if kind == "lars":
        return LARS(learning_rate, momentum=momentum, weight_decay=weight_decay,
                    eta=config.lars_eta)
    if kind == "larc":
        return LARC(learning_rate, momentum=momentum, weight_decay=weight_decay,
                    eta=config.lars_eta)
    if kind == "adamw":
        return AdamW(learning_rate, weight_decay=float(weight_decay),
                     beta_1=config.adam_beta_1, beta_2=config.adam_beta_2)
    if kind == "lamb":
        return Lamb(learning_rate, weight_decay=float(weight_decay) or None,
                    beta_1=config.adam_beta_1, beta_2=config.adam_beta_2)
    raise ValueError(f"Unknown optimizer {kind!r}. "
                     "Valid: ['sgd', 'lars', 'larc', 'adamw', 'lamb']")


def build_optimizer(config, steps_per_epoch=None):
    """The pre-training optimizer of ``config``.

    With a predictor learning-rate multiplier != 1 (or, for optimizers with their
    own decay, a different predictor weight decay) the predictor's variables get
    a second optimizer of the same kind, through ``keras.optimizers.MultiOptimizer``
    (stable symmetric SimSiam: 10x rate, no decay). ``steps_per_epoch`` is needed
    for ``lr_schedule="warmup_cosine"`` (``ValueError`` otherwise).
    """
    base = _single_optimizer(config, learning_rate_schedule(config, steps_per_epoch),
                             config.weight_decay)
    own_predictor_decay = (not uses_coupled_weight_decay(config)
                           and predictor_weight_decay(config) != config.weight_decay)
    if config.predictor_lr_multiplier == 1.0 and not own_predictor_decay:
        return base
    fast = _single_optimizer(
        config, learning_rate_schedule(config, steps_per_epoch,
                                       multiplier=config.predictor_lr_multiplier),
        predictor_weight_decay(config))
    return keras.optimizers.MultiOptimizer(
        keras.optimizers.OptimizerMap(base, {PREDICTOR_VARIABLES: fast}))
