"""The frozen groups of a run's fields: data, augmentation, encoder, projector, objective,
target, predictor, optimisation, probe, monitors and numerics.

Each group declares its fields (names, types, defaults) and checks every one of them on
construction, whatever run it belongs to; :class:`config.Config` inherits all of them (one
flat namespace: ``config.flip_prob``) and runs each group's :meth:`_validate`. A group's
switches that make some of its options meaningless (``optimizer``, ``blur_prob``, ...)
are declared beside it as :data:`~config.methods.Uses` (``CONDITIONAL``). Errors are one
line, ``"Config.FIELD must be ... Received: FIELD=VALUE"`` (the class name of the object
checked). Imports nothing but the standard library.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

from config.methods import COMPUTED_PREDICTORS, METHODS, PREDICTORS, Uses

#: CIFAR-10 per-channel mean and std of the official DirectPred code (luckmatters
#: ``ssl/real-dataset/data/transforms.py``: ``Normalize([0.4914, 0.4822, 0.4465],
#: [0.2023, 0.1994, 0.2010])``; docs/recipes.md). Before config version 3 the default std was
#: the per-pixel std of the CIFAR-10 train set, (0.2470, 0.2435, 0.2616).
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)

#: Encoders of ``models/backbones.py`` (``train.py --backbone``).
BACKBONES = ("resnet18", "resnet34", "resnet50", "vgg16", "densenet121", "efficientnet_b0",
             "alexnet", "linear")
STEMS = ("auto", "cifar", "imagenet")
PROJECTORS = ("mlp", "deeper", "none")
#: ``cosine``: 2 - 2 cos (BYOL, SimSiam); ``l2``: the paper's un-normalised
#: ``||Wp W x1 - sg(Wa x2)||^2`` (Sec. 2, Eq. 1), for the linear theory.
LOSSES = ("cosine", "l2")
#: Linear-probe protocols (models/classifier.py): ``official`` is luckmatters'
#: mini-batch Adam loop, ``full_batch`` full-batch Adam to convergence, ``auto`` the
#: official loop where it has the published number of steps, else full_batch.
PROBE_PROTOCOLS = ("auto", "official", "full_batch")
EMA_SCHEDULES = ("constant", "cosine")
#: DirectCopy's normalisation of F: ``spectral`` F / s_max (DirectSet(alpha = 1), the
#: DirectPred normalisation at power 1), ``frobenius`` F / ||F||_F (TF2 reproduction).
DIRECTCOPY_NORMS = ("spectral", "frobenius")
#: Where DirectSet's eps enters: ``after_power`` p = r^alpha + eps (DirectPred and DirectCopy
#: here, so DirectSet(1/2) = DirectPred, DirectSet(1) = DirectCopy); ``before_power``
#: p = (r + eps)^alpha (fmi-basel/implicit-var-reg ``solo/methods/directpred.py``).
DIRECTSET_EPS_AT = ("after_power", "before_power")
#: The closed-form predictors of Richemond et al. 2023 (arXiv 2302.04817), iterated on F:
#: ``newton_schulz`` -> F^{1/2}, ``ns2`` (two passes) -> F^{1/4}, ``stiefel`` -> the polar
#: factor of F, ``visser`` -> F^{1/2} (models/predictors.py: CLOSED_FORMS).
CLOSED_FORMS = ("newton_schulz", "ns2", "stiefel", "visser")
TARGET_INITS = ("copy", "independent")
#: ``torch``: PyTorch's initialisers, as the official code's networks (torchvision ResNet:
#: Kaiming-normal fan-out convolutions; ``nn.Conv2d`` / ``nn.Linear`` defaults elsewhere);
#: ``keras``: Keras's defaults (Glorot-uniform kernels, zero biases). models/network_constants.py.
WEIGHT_INITS = ("torch", "keras")
MIXED_PRECISION = ("none", "float16", "bfloat16")
AUGMENT_ON = ("host", "device")
OPTIMIZERS = ("sgd", "lars", "larc", "adamw", "lamb")
LR_SCHEDULES = ("constant", "warmup_cosine")
LR_SCALINGS = ("none", "linear")
#: ``tf.distribute`` strategies (``experiments/distribute.py: make_strategy``).
STRATEGIES = ("default", "mirrored", "multiworker", "tpu")


# ---- checks shared by the groups (``group`` is the object checked) ----

def _fail(group, field, rule):
    raise ValueError(f"{type(group).__name__}.{field} must be {rule}. "
                     f"Received: {field}={getattr(group, field)!r}")


def _choice(group, field, choices):
    if getattr(group, field) not in choices:
        _fail(group, field, f"one of {list(choices)}")


def _check(group, fields, ok, rule):
    for field in fields:
        try:
            good = ok(getattr(group, field))
        except TypeError:  # a value of the wrong kind
            good = False
        if not good:
            _fail(group, field, rule)


def _at_least(group, fields, bound):
    _check(group, fields, lambda v: v >= bound, f">= {bound}")


def _positive(group, fields):
    _check(group, fields, lambda v: v > 0, "> 0")


def _fraction(group, fields):
    _check(group, fields, lambda v: 0.0 <= v < 1.0, "in [0, 1)")


class _Group:
    """Validates itself on construction (:meth:`_validate`, also run by Config)."""

    #: Options of this group that only some of its settings use.
    CONDITIONAL: Tuple[Uses, ...] = ()

    def __post_init__(self):
        self._validate()

    def _validate(self):
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class Data(_Group):
    """Which images: dataset, subsets, held-out split, seed."""

    dataset: str = "cifar10"
    data_dir: Optional[str] = None
    max_train_examples: Optional[int] = None
    max_test_examples: Optional[int] = None
    #: > 0: hold out this many (seeded) train examples as the evaluation split of
    #: the probe and kNN, for tuning without reading the test split (which is then
    #: not used: max_test_examples must stay None).
    validation_examples: int = 0
    seed: int = 0

    def _validate(self):
        _at_least(self, ("validation_examples",), 0)
        _check(self, ("max_train_examples", "max_test_examples"),
               lambda v: v is None or v >= 1, "None or >= 1")
        if self.validation_examples and self.max_test_examples is not None:
            raise ValueError(
                "max_test_examples limits the test split, which a run with "
                f"validation_examples={self.validation_examples} does not use. "
                f"Received: max_test_examples={self.max_test_examples!r}")


def _increasing_pair(v):
    return len(v) == 2 and 0 < v[0] <= v[1]


@dataclasses.dataclass(frozen=True)
class AugmentParams(_Group):
    """The two-view augmentation (CIFAR recipe of the official DirectPred code,
    ``data/transforms.py``; the paper's App. C gives none): data_processing/augment_ops.py.
    Built alone, its tuples become float tuples (it keys the compiled-function cache)."""

    image_size: int = 32
    crop_scale: Tuple[float, float] = (0.08, 1.0)
    crop_ratio: Tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    flip_prob: float = 0.5
    jitter: Tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    jitter_prob: float = 0.8
    grayscale_prob: float = 0.2
    blur_prob: float = 0.0
    blur_kernel_size: int = 9
    blur_sigma: Tuple[float, float] = (0.1, 2.0)
    normalize_mean: Tuple[float, float, float] = CIFAR_MEAN
    normalize_std: Tuple[float, float, float] = CIFAR_STD

    CONDITIONAL = (Uses(("blur_kernel_size", "blur_sigma"), lambda c: c.blur_prob > 0,
                        "blur_prob > 0"),)

    def __post_init__(self):
        for name in ("crop_scale", "crop_ratio", "jitter", "blur_sigma",
                     "normalize_mean", "normalize_std"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        self._validate()

    def _validate(self):
        _at_least(self, ("image_size",), 1)
        _check(self, ("crop_scale", "crop_ratio", "blur_sigma"), _increasing_pair,
               "an increasing pair 0 < low <= high")
        _check(self, ("jitter",), lambda v: len(v) == 4 and min(v) >= 0 and v[3] <= 0.5,
               "4 values >= 0 (brightness, contrast, saturation, hue <= 0.5)")
        _check(self, ("normalize_mean",), lambda v: len(v) == 3, "3 values")
        _check(self, ("normalize_std",), lambda v: len(v) == 3 and min(v) > 0,
               "3 values > 0")
        _check(self, ("blur_kernel_size",), lambda v: v >= 1 and v % 2 == 1, "odd and >= 1")
        _check(self, ("flip_prob", "jitter_prob", "grayscale_prob", "blur_prob"),
               lambda v: 0.0 <= v <= 1.0, "in [0, 1]")

    @classmethod
    def from_config(cls, config) -> "AugmentParams":
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls)})


@dataclasses.dataclass(frozen=True)
class Encoder(_Group):
    """The backbone, and the initialisers and BatchNorm constants of every network."""

    backbone: str = "resnet18"
    width: float = 1.0
    stem: str = "auto"
    #: Initialisers (one of WEIGHT_INITS) and BatchNorm constants of every encoder and head:
    #: PyTorch's (eps 1e-5, momentum 0.1 = Keras momentum 0.9), as the official code runs.
    weight_init: str = "torch"
    bn_epsilon: float = 1e-5
    #: Keras convention: running = momentum * running + (1 - momentum) * batch.
    bn_momentum: float = 0.9

    def _validate(self):
        _choice(self, "backbone", BACKBONES)
        _choice(self, "stem", STEMS)
        _choice(self, "weight_init", WEIGHT_INITS)
        _positive(self, ("width", "bn_epsilon"))
        _check(self, ("bn_momentum",), lambda v: 0.0 <= v < 1.0,
               "in [0, 1) (Keras convention: the weight of the running value)")


@dataclasses.dataclass(frozen=True)
class Projector(_Group):
    """The projection head."""

    projector: str = "mlp"
    projector_hidden_dim: int = 512
    projection_dim: int = 128

    def _validate(self):
        _choice(self, "projector", PROJECTORS)
        _at_least(self, ("projector_hidden_dim", "projection_dim"), 1)


@dataclasses.dataclass(frozen=True)
class Objective(_Group):
    """The method (:data:`config.methods.METHOD_SPECS`) and its loss options."""

    #: ``noncontrastive`` = BYOL / SimSiam / DirectPred / DirectCopy (chosen by the
    #: predictor and target fields); the others are one unit each in ``models/``.
    method: str = "noncontrastive"
    #: one of LOSSES; ``l2`` for the non-contrastive methods only.
    loss: str = "cosine"
    #: Softmax temperature of NT-Xent (SimCLR), SupCon, InfoNCE (MoCo) and SwAV.
    temperature: float = 0.1
    #: MoCo: negatives kept in the queue. SwAV: embeddings kept for Sinkhorn (0 = off).
    queue_size: int = 0
    #: SwAV: the queue is used from this epoch on (0-based).
    queue_start_epoch: int = 0
    #: SwAV: number of prototypes, Sinkhorn epsilon and iterations (Caron et al. 2020).
    num_prototypes: int = 3000
    sinkhorn_epsilon: float = 0.05
    sinkhorn_iterations: int = 3
    #: SwAV: prototypes get no gradient during the first epochs.
    freeze_prototypes_epochs: int = 1
    #: Barlow Twins: weight of the off-diagonal term and overall loss scale.
    barlow_lambda: float = 0.0051
    barlow_scale: float = 1.0
    #: IsoLoss (Halvagal, Laborieux & Zenke, NeurIPS 2023; their code's ``iso=True``): the
    #: ``loss`` (cosine or l2) with its gradient reaching z without the predictor's factor
    #: Wp^T, so that Wp's eigenvalues no longer scale each mode's learning rate. Computed
    #: predictors only (:mod:`models.losses`, docs/successors.md).
    isoloss: bool = False

    def _validate(self):
        _choice(self, "method", METHODS)
        _choice(self, "loss", LOSSES)
        _check(self, ("isoloss",), lambda v: isinstance(v, bool), "True or False")
        _positive(self, ("temperature", "sinkhorn_epsilon"))
        _at_least(self, ("queue_size", "queue_start_epoch", "freeze_prototypes_epochs"), 0)
        _at_least(self, ("num_prototypes", "sinkhorn_iterations"), 1)


@dataclasses.dataclass(frozen=True)
class Target(_Group):
    """The target branch."""

    #: EMA rate of the target network; 0 means SimSiam: the target is the
    #: online network itself under stop-gradient (no copy is kept).
    ema_tau: float = 0.996
    ema_schedule: str = "constant"
    #: EMA target at step 0: its own "independent" random draw, as the official DirectPred
    #: code (``byol_trainer.py``: the copy-at-start call is commented out), or a "copy" of
    #: the online network (BYOL paper, MoCo).
    target_init: str = "independent"

    def _validate(self):
        _fraction(self, ("ema_tau",))
        _choice(self, "ema_schedule", EMA_SCHEDULES)
        _choice(self, "target_init", TARGET_INITS)


@dataclasses.dataclass(frozen=True)
class Predictor(_Group):
    """The predictor (:data:`config.methods.PREDICTOR_SPECS`) and its updates (DirectPred
    Sec. 4, Eqns. 18-19; DirectCopy)."""

    predictor: str = "mlp"
    predictor_hidden_dim: int = 512
    #: BatchNorm of the MLP predictor with a learned scale and shift; the official config's
    #: ``predictor_params.has_bn_affine: false`` (the projector's BN never has one).
    predictor_bn_affine: bool = False
    #: Decay of the correlation accumulator F = rho F + (1 - rho) E[z z^T].
    corr_rho: float = 0.3
    #: Subtract the batch mean of z before forming E[z z^T].
    corr_center: bool = False
    #: DirectPred: p_j = (s_j / s_max)^power + eps. DirectCopy: Wp = F / norm(F) + eps I.
    predictor_eps: float = 0.1
    #: DirectCopy's norm(F) (:data:`DIRECTCOPY_NORMS`): ``spectral`` = s_max, so that
    #: DirectCopy is DirectSet(1) beside DirectPred = DirectSet(1/2) (docs/recipes.md).
    directcopy_norm: str = "spectral"
    #: DirectPred: the exponent of s_j / s_max (0.5 = Eq. 18; 1 / official ``dyn_convert``).
    predictor_power: float = 0.5
    #: DirectSet(alpha) (Wang et al. 2021): p_j = (s_j / s_max)^alpha with ``predictor_eps``
    #: added where ``directset_eps_at`` says (:data:`DIRECTSET_EPS_AT`).
    directset_alpha: float = 0.5
    directset_eps_at: str = "before_power"
    #: ``predictor="closed_form"`` (Richemond et al. 2023): which iteration
    #: (:data:`CLOSED_FORMS`), its number of iterations n (per pass for ``ns2``), the ridge
    #: alpha added as ``alpha I``, and the EMA rate of Wp itself (0: Wp = rule(F)).
    closed_form: str = "newton_schulz"
    closed_form_iterations: int = 9
    closed_form_ridge: float = 0.0
    closed_form_ema: float = 0.0
    #: The Visser iteration's step eta on ``F / ||F||_F`` (``P_0 = I / (2 eta)``; converges
    #: for ``eta < 1``).
    visser_step: float = 0.5
    #: Recompute Wp every ``predictor_freq`` steps (paper Table 8: 1 or 5).
    predictor_freq: int = 1
    #: With ``predictor_freq > 1``: between recomputations Wp is trained by the optimizer
    #: like any layer (paper Sec. 4: "When Wp is not set by eigen decomposition, it is
    #: updated by regular gradient updates"; official ``byol_trainer.py``: the predictor's SGD
    #: step runs every step, its momentum never reset). False: Wp stays frozen in between
    #: (the original TF2 reproduction; config.json files before version 3).
    predictor_trained_between: bool = True
    #: Symmetry regularisation of the predictor after every step.
    symmetry: bool = False

    CONDITIONAL = (Uses(("predictor_trained_between",),
                        lambda c: (c.method == "noncontrastive" and c.predictor_freq > 1
                                   and c.predictor in COMPUTED_PREDICTORS),
                        "a predictor computed from F every predictor_freq > 1 steps"),
                   Uses(("visser_step",),
                        lambda c: (c.method == "noncontrastive" and c.predictor == "closed_form"
                                   and c.closed_form == "visser"), "closed_form='visser'"))

    def _validate(self):
        _choice(self, "predictor", PREDICTORS)
        _choice(self, "directcopy_norm", DIRECTCOPY_NORMS)
        _choice(self, "directset_eps_at", DIRECTSET_EPS_AT)
        _positive(self, ("directset_alpha",))
        _choice(self, "closed_form", CLOSED_FORMS)
        _check(self, ("closed_form_iterations",),
               lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
               "an integer >= 1")
        _at_least(self, ("closed_form_ridge",), 0)
        _fraction(self, ("closed_form_ema",))
        _positive(self, ("visser_step",))
        _at_least(self, ("predictor_hidden_dim", "predictor_freq"), 1)
        _fraction(self, ("corr_rho",))
        _positive(self, ("predictor_power",))
        _at_least(self, ("predictor_eps",), 0)


@dataclasses.dataclass(frozen=True)
class Optimisation(_Group):
    """The pre-training optimizer and schedule (``models/optimizers.py``)."""

    #: sgd (the paper; coupled L2 decay) | lars | larc | adamw | lamb (decay applied
    #: by the optimizer, BN parameters and biases excluded).
    optimizer: str = "sgd"
    #: Base learning rate (``train.py --base_lr``), before ``lr_scaling``.
    learning_rate: float = 0.03
    #: Momentum of sgd / lars / larc.
    momentum: float = 0.9
    #: L2 coefficient added to the gradient of every parameter (coupled decay).
    weight_decay: float = 4e-4
    #: Learning-rate multiplier of the predictor (stable SimSiam uses 10).
    predictor_lr_multiplier: float = 1.0
    #: Predictor's own weight decay; ``None`` means ``weight_decay``.
    predictor_weight_decay: Optional[float] = None
    #: constant (the paper) | warmup_cosine: linear warm-up from ``warmup_lr`` over
    #: ``warmup_epochs`` (cut to ``epochs_pretraining`` if longer), then cosine decay
    #: to ``final_lr`` at the end of training.
    lr_schedule: str = "constant"
    warmup_epochs: int = 0
    warmup_lr: float = 0.0
    final_lr: float = 0.0
    #: none | linear: every rate above times ``batch_size / 256`` (Goyal et al. 2017).
    lr_scaling: str = "none"
    #: Trust coefficient of LARS / LARC.
    lars_eta: float = 0.001
    #: Moment decay rates of adamw / lamb.
    adam_beta_1: float = 0.9
    adam_beta_2: float = 0.999
    batch_size: int = 128
    #: The paper's "100 epochs" (official ``trainer.max_epochs=100``).
    epochs_pretraining: int = 100

    CONDITIONAL = (
        Uses(("momentum",), lambda c: c.optimizer in ("sgd", "lars", "larc"),
             "optimizer 'sgd', 'lars' or 'larc'"),
        Uses(("lars_eta",), lambda c: c.optimizer in ("lars", "larc"),
             "optimizer 'lars' or 'larc'"),
        Uses(("adam_beta_1", "adam_beta_2"), lambda c: c.optimizer in ("adamw", "lamb"),
             "optimizer 'adamw' or 'lamb'"),
        Uses(("warmup_epochs", "warmup_lr", "final_lr"),
             lambda c: c.lr_schedule == "warmup_cosine", "lr_schedule='warmup_cosine'"),
    )

    def _validate(self):
        _choice(self, "optimizer", OPTIMIZERS)
        _choice(self, "lr_schedule", LR_SCHEDULES)
        _choice(self, "lr_scaling", LR_SCALINGS)
        _positive(self, ("learning_rate", "lars_eta", "predictor_lr_multiplier"))
        _at_least(self, ("weight_decay", "warmup_epochs", "warmup_lr", "final_lr",
                         "epochs_pretraining"), 0)
        _check(self, ("predictor_weight_decay",), lambda v: v is None or v >= 0,
               "None or >= 0")
        _fraction(self, ("momentum", "adam_beta_1", "adam_beta_2"))
        _at_least(self, ("batch_size",), 1)


@dataclasses.dataclass(frozen=True)
class Probe(_Group):
    """The linear evaluation (luckmatters ``linear_feature_eval.py``), after pre-training:
    a run that is not complete may resume with other values."""

    epochs_finetuning: int = 50
    probe_learning_rate: float = 3e-4
    probe_weight_decay: float = 1e-3
    probe_batch_size: int = 128
    probe_protocol: str = "auto"

    def _validate(self):
        # The probe runs after pre-training: refused here, not after it.
        _at_least(self, ("epochs_finetuning", "probe_batch_size"), 1)
        _positive(self, ("probe_learning_rate",))
        _at_least(self, ("probe_weight_decay",), 0)
        _choice(self, "probe_protocol", PROBE_PROTOCOLS)


@dataclasses.dataclass(frozen=True)
class Monitors(_Group):
    """The kNN monitor and the eigenspace tracker of Wp and F."""

    knn_every: int = 10
    knn_k: int = 200
    knn_temperature: float = 0.1
    eigenspace: bool = False
    eigenspace_every: int = 5

    CONDITIONAL = (
        Uses(("knn_k", "knn_temperature"), lambda c: c.knn_every > 0, "knn_every > 0"),
        Uses(("eigenspace_every",), lambda c: c.eigenspace, "eigenspace=True"),
        # F is also accumulated for the tracker (the computed predictors declare it too).
        Uses(("corr_rho", "corr_center"),
             lambda c: c.method == "noncontrastive" and c.eigenspace, "eigenspace=True"),
    )

    def _validate(self):
        _at_least(self, ("knn_every",), 0)
        _at_least(self, ("knn_k", "eigenspace_every"), 1)
        _positive(self, ("knn_temperature",))


@dataclasses.dataclass(frozen=True)
class Numerics(_Group):
    """Where and in which precision the run computes."""

    mixed_precision: str = "none"
    jit_compile: bool = False
    #: default (one device) | mirrored (local GPUs) | multiworker (TF_CONFIG) | tpu.
    #: ``batch_size`` is the global batch, split over the replicas.
    strategy: str = "default"
    #: Augment in the tf.data pipeline (host) or inside the train step (device).
    augment_on: str = "host"

    def _validate(self):
        _choice(self, "mixed_precision", MIXED_PRECISION)
        _choice(self, "strategy", STRATEGIES)
        _choice(self, "augment_on", AUGMENT_ON)


#: Every group, in the order Config checks them (and lists their fields).
GROUPS = (Data, AugmentParams, Encoder, Projector, Objective, Target, Predictor,
          Optimisation, Probe, Monitors, Numerics)
#: Fields of the linear probe (:class:`Probe`).
PROBE_FIELDS = tuple(f.name for f in dataclasses.fields(Probe))
