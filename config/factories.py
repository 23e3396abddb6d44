"""The named experiments: one factory per experiment, and the one registry of their names.

Each ``get_NAME`` fixes every hyper-parameter of one experiment of Tian, Chen & Ganguli,
"Understanding Self-Supervised Learning Dynamics without Contrastive Pairs" (ICML 2021) or
of the original TF2 reproduction it extends; ``@factory`` registers it under ``NAME`` (and a
``train.py --model`` name). :func:`get_config` resolves a name plus overrides.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

from config.core import Config
from config.presets import with_dataset

#: Factory name (``train.py --config``) -> factory.
FACTORIES: Dict[str, Callable[[], Config]] = {}
#: ``train.py --model`` name -> factory name.
MODELS: Dict[str, str] = {}


def factory(model: Optional[str] = None):
    """Registers ``get_NAME`` under ``NAME``, and under the ``--model`` name ``model``."""
    def register(function):
        name = function.__name__[len("get_"):]
        FACTORIES[name] = function
        if model:
            MODELS[model] = name
        return function
    return register


@factory(model="byol")
def get_byol() -> Config:
    """BYOL as the paper trains it (Sec. 1: ResNet-18, SGD lr 0.03, momentum 0.9, weight
    decay 4e-4, EMA 0.996; official ``byol_config.yaml``): 2-layer MLP predictor (BN
    without affine), target drawn independently. Every value: docs/recipes.md."""
    return Config(name="byol")


@factory()
def get_eigenspace_experiment() -> Config:
    """BYOL with a one-layer linear predictor, tracking the eigenspace of Wp and F
    (paper Sec. 3.1, Theorem 3, Fig. 2: the eigenvectors of Wp and F align during training)."""
    return Config(name="eigenspace_experiment", predictor="linear", eigenspace=True)


@factory()
def get_eigenspace_experiment_with_symmetry() -> Config:
    """As :func:`get_eigenspace_experiment` with Wp <- (Wp + Wp^T)/2 after each step."""
    return Config(name="eigenspace_experiment_with_symmetry", predictor="linear",
                  eigenspace=True, symmetry=True)


@factory()
def get_byol_baseline() -> Config:
    """The paper's "SGD baseline" (Table 8): BYOL with a one-layer bias-free linear predictor
    trained by SGD and symmetrised after every step. The paper does not say whether it was
    symmetric; the official ``byol_config.yaml`` symmetrises unless a command overrides
    ``predictor_reg`` (default ``symmetric``), and its STL-10 figure (75.06) is Table 3's
    symmetric-with-EMA cell (75.09), not the regular one (74.51): docs/recipes.md."""
    return Config(name="byol_baseline", predictor="linear", symmetry=True)


@factory(model="simsiam")
def get_simsiam() -> Config:
    """SimSiam: 2-layer predictor, target = online network under stop-gradient."""
    return Config(name="simsiam", ema_tau=0.0)


@factory()
def get_simsiam_symmetric() -> Config:
    """SimSiam with symmetry regularisation of the 2-layer predictor."""
    return Config(name="simsiam_symmetric", ema_tau=0.0,
                  symmetry=True)


@factory()
def get_simsiam_symmetric_predictor() -> Config:
    """Stable symmetric SimSiam of the original reproduction's ``simsiam_predictor``
    branch: predictor trained with a 10x learning rate and its own weight decay."""
    return Config(name="simsiam_symmetric_predictor", ema_tau=0.0,
                  symmetry=True, predictor_lr_multiplier=10.0,
                  predictor_weight_decay=0.0)


@factory()
def get_simsiam_baseline() -> Config:
    """SimSiam with a one-layer linear predictor trained by SGD and no EMA. Does not
    collapse in the paper (Table 3, regular Wp without EMA: 72.85% on STL-10)."""
    return Config(name="simsiam_baseline", ema_tau=0.0,
                  predictor="linear")


@factory()
def get_simsiam_baseline_symmetric() -> Config:
    """As :func:`get_simsiam_baseline` with a symmetrised Wp: the paper's collapse
    case (Table 3: symmetric Wp without EMA, 36.62% on STL-10, vs 72.85% regular)."""
    return Config(name="simsiam_baseline_symmetric", ema_tau=0.0,
                  predictor="linear", symmetry=True)


@factory(model="directpred")
def get_direct_pred() -> Config:
    """DirectPred (paper Sec. 4, Eq. 18), EMA target, Wp recomputed every step; rho 0.3 and
    eps 0.1 from Table 8's caption (the official README's command uses eps 0.01:
    docs/recipes.md)."""
    return Config(name="direct_pred", predictor="directpred", predictor_eps=0.1,
                  corr_rho=0.3, predictor_freq=1)


@factory()
def get_direct_pred_freq_5() -> Config:
    """DirectPred with Wp recomputed every 5 steps and trained by SGD in between (paper
    Sec. 4 "Hyper-parameter freq", Table 8, freq=5)."""
    return Config(name="direct_pred_freq_5", predictor="directpred", predictor_eps=0.1,
                  corr_rho=0.3, predictor_freq=5)


@factory()
def get_simsiam_pred() -> Config:
    """DirectPred without EMA (SimSiam-style stop-gradient target). Unlike the
    original TF2 reproduction, this really sets Wp from F every step."""
    return Config(name="simsiam_pred", predictor="directpred", predictor_eps=0.1,
                  corr_rho=0.3, ema_tau=0.0)


@factory()
def get_deeper_projection() -> Config:
    """BYOL with a projector that has one more hidden layer."""
    return Config(name="deeper_projection", projector="deeper")


@factory(model="directcopy")
def get_direct_copy() -> Config:
    """DirectCopy (Wang et al. 2021): Wp = F / s_max(F) + eps I, eps 0.3, rho 0.5, EMA."""
    return Config(name="direct_copy", predictor="directcopy", predictor_eps=0.3,
                  corr_rho=0.5)


@factory()
def get_direct_copy_no_ema() -> Config:
    """DirectCopy without EMA (stop-gradient target)."""
    return Config(name="direct_copy_no_ema", predictor="directcopy", predictor_eps=0.3,
                  corr_rho=0.5, ema_tau=0.0)


# ---- the wider family (issue: SimCLR, SupCon, SwAV, MoCo v2, Barlow Twins) ----
# Published CIFAR-10 ResNet-18 recipes of solo-learn (da Costa et al., JMLR 2022,
# scripts/pretrain/cifar/*.yaml and its scheduler defaults): batch 256, 1000 epochs,
# 10 warm-up epochs from 3e-5, then cosine decay to 0, symmetric CIFAR augmentation
# (jitter 0.4/0.4/0.2/0.1, no blur); rates scale as batch/256, as solo-learn does.
# solo-learn's "lars" with clip_lr=True is LARC here (eta 0.02, BN/bias excluded).
_FAMILY = dict(batch_size=256, epochs_pretraining=1000, lr_schedule="warmup_cosine",
               lr_scaling="linear", warmup_epochs=10, warmup_lr=3e-5, final_lr=0.0,
               jitter=(0.4, 0.4, 0.2, 0.1), projector_hidden_dim=2048)


@factory(model="simclr")
def get_simclr() -> Config:
    """SimCLR (Chen et al. 2020): NT-Xent, temperature 0.2, 2048-256 projector,
    LARC lr 0.4, weight decay 1e-4."""
    return Config(name="simclr", method="simclr", temperature=0.2, projection_dim=256,
                  optimizer="larc", learning_rate=0.4, weight_decay=1e-4, lars_eta=0.02,
                  **_FAMILY)


@factory(model="supcon")
def get_supcon() -> Config:
    """Supervised contrastive (Khosla et al. 2020): temperature 0.2, 2048-256
    projector, SGD lr 0.4, weight decay 1e-5. Pre-trains on the labelled split."""
    return Config(name="supcon", method="supcon", temperature=0.2, projection_dim=256,
                  optimizer="sgd", learning_rate=0.4, weight_decay=1e-5, **_FAMILY)


@factory(model="swav")
def get_swav() -> Config:
    """SwAV (Caron et al. 2020): 3000 prototypes, Sinkhorn eps 0.05 x 3, temperature
    0.1, queue of 3840 from epoch 50, prototypes frozen in the first epoch (SwAV
    paper; solo-learn freezes 2), LARC lr 0.6, weight decay 1e-6."""
    return Config(name="swav", method="swav", temperature=0.1, projection_dim=128,
                  num_prototypes=3000, sinkhorn_epsilon=0.05, sinkhorn_iterations=3,
                  queue_size=3840, queue_start_epoch=50, freeze_prototypes_epochs=1,
                  optimizer="larc", learning_rate=0.6, weight_decay=1e-6, lars_eta=0.02,
                  **_FAMILY)


@factory(model="moco")
def get_moco() -> Config:
    """MoCo v2 (Chen et al. 2020), symmetric loss as solo-learn's "mocov2plus":
    queue 32768, temperature 0.2, momentum 0.99 (constant; solo-learn raises it
    to 0.999), 2048-256 projector, SGD lr 0.3, weight decay 1e-4."""
    return Config(name="moco", method="moco", temperature=0.2, projection_dim=256,
                  queue_size=32768, ema_tau=0.99, target_init="copy",
                  optimizer="sgd", learning_rate=0.3,
                  weight_decay=1e-4, **_FAMILY)


@factory(model="barlow_twins")
def get_barlow_twins() -> Config:
    """Barlow Twins (Zbontar et al. 2021): 2048-2048-2048 projector, lambda 0.0051,
    loss scale 0.1, LARC lr 0.3, weight decay 1e-4 (solo-learn's CIFAR recipe also
    uses asymmetric blur/solarisation, not available here)."""
    return Config(name="barlow_twins", method="barlow_twins", projector="deeper",
                  projection_dim=2048, barlow_lambda=0.0051, barlow_scale=0.1,
                  optimizer="larc", learning_rate=0.3, weight_decay=1e-4, lars_eta=0.02,
                  **_FAMILY)


# ---- the DirectPred family's successors (docs/successors.md) ----
# CIFAR recipes of fmi-basel/implicit-var-reg (Halvagal, Laborieux & Zenke, NeurIPS 2023; a
# solo-learn fork): scripts/pretrain/cifar/{directpred,isoloss}{,-noema}.yaml with the weight
# decay 1e-4 that run_experiments.sh sets on every such command, and solo-learn's schedule
# (_FAMILY above): ResNet-18, 4096-256 projector, batch 256, 1000 epochs. Their F is an EMA
# with dp_tau per view, updated once per view: corr_rho = dp_tau^2 per step here (0.998 ->
# 0.996; 0.5 -> 0.25). Their asymmetric augmentations (blur, solarisation) are not
# available here; the projector's BatchNorm has no affine (theirs has one).
_SUCCESSOR = dict(_FAMILY, projector_hidden_dim=4096, projection_dim=256, weight_decay=1e-4,
                  predictor="directset", directset_eps_at="before_power")
#: With the EMA target: LARS with clip_lr (LARC here) lr 1.0, eta 0.02, tau 0.99 -> 1 (cosine).
_SUCCESSOR_EMA = dict(_SUCCESSOR, optimizer="larc", learning_rate=1.0, lars_eta=0.02,
                      ema_tau=0.99, ema_schedule="cosine", target_init="copy", corr_rho=0.996)
#: Without it (their "-noema" configs): SGD lr 0.1, momentum 0.9, dp_tau 0.5.
_SUCCESSOR_NO_EMA = dict(_SUCCESSOR, optimizer="sgd", learning_rate=0.1, momentum=0.9,
                         ema_tau=0.0, corr_rho=0.25)


@factory(model="directset")
def get_direct_set() -> Config:
    """DirectSet(1/2) with eps 0 (Wang et al. 2021; fmi-basel/implicit-var-reg
    ``directpred.yaml``: dp_alpha 0.5, eps_iso 0), EMA target."""
    return Config(name="direct_set", directset_alpha=0.5, predictor_eps=0.0,
                  **_SUCCESSOR_EMA)


@factory()
def get_direct_set_no_ema() -> Config:
    """:func:`get_direct_set` without EMA (implicit-var-reg ``directpred-noema.yaml``)."""
    return Config(name="direct_set_no_ema", directset_alpha=0.5, predictor_eps=0.0,
                  **_SUCCESSOR_NO_EMA)


@factory()
def get_direct_set_copy() -> Config:
    """DirectCopy as DirectSet(1) with eps 0.25 before the power (implicit-var-reg
    ``run_experiments.sh``: ``directpred.yaml`` with dp_alpha 1, eps_iso 0.25), EMA."""
    return Config(name="direct_set_copy", directset_alpha=1.0, predictor_eps=0.25,
                  **_SUCCESSOR_EMA)


@factory(model="isoloss")
def get_isoloss() -> Config:
    """IsoLoss (Halvagal, Laborieux & Zenke 2023) on DirectSet(1/2), eps 0, EMA target
    (implicit-var-reg ``isoloss.yaml``: iso True, cosine form)."""
    return Config(name="isoloss", directset_alpha=0.5, predictor_eps=0.0, isoloss=True,
                  **_SUCCESSOR_EMA)


@factory()
def get_isoloss_no_ema() -> Config:
    """IsoLoss without EMA (implicit-var-reg ``isoloss-noema.yaml``: SGD lr 0.1, dp_tau 0.5),
    the setting the paper's abstract says IsoLoss makes possible."""
    return Config(name="isoloss_no_ema", directset_alpha=0.5, predictor_eps=0.0, isoloss=True,
                  **_SUCCESSOR_NO_EMA)


# ---- the closed-form predictors of Richemond et al. (docs/successors.md) ----
# Richemond, Tam, Tang, Strub, Piot & Hill, "The Edge of Orthogonality: A Simple View of What
# Makes BYOL Tick" (ICML 2023, arXiv 2302.04817). Their protocol is BYOL's with the trained
# predictor replaced (Sec. 6), so each factory is get_byol with Wp computed from F: the
# iteration count n and the ridge alpha of the best cell of their Table 2 (ImageNet,
# ResNet-50, 100 epochs). F is the package's (EMA rho 0.3 of both views' E[z z^T]); their EMA
# of Wp has a rate that their main text does not state, so closed_form_ema stays 0.
_CLOSED_FORM = dict(predictor="closed_form", corr_rho=0.3, predictor_freq=1)


@factory()
def get_closed_form_ns() -> Config:
    """NS predictor, n = 9, ridge 0.9 (Richemond et al. 2023, Sec. 4.3; Table 2's best NS
    cell: 68.0)."""
    return get_byol().replace(name="closed_form_ns", closed_form="newton_schulz",
                              closed_form_iterations=9, closed_form_ridge=0.9, **_CLOSED_FORM)


@factory()
def get_closed_form_ns2() -> Config:
    """NS^2 predictor, n = 7 per pass, ridge 0.9 (Richemond et al. 2023, Sec. 4.3; Table 2's
    best NS^2 cell: 68.8)."""
    return get_byol().replace(name="closed_form_ns2", closed_form="ns2",
                              closed_form_iterations=7, closed_form_ridge=0.9, **_CLOSED_FORM)


@factory(model="closed_form")
def get_closed_form_stiefel() -> Config:
    """Stiefel predictor, n = 9, ridge 0.3 (Richemond et al. 2023, Sec. 5.2; Table 2's best
    Stiefel cell: 68.8, and Table 3's; the variant their Sec. 6 recommends)."""
    return get_byol().replace(name="closed_form_stiefel", closed_form="stiefel",
                              closed_form_iterations=9, closed_form_ridge=0.3, **_CLOSED_FORM)


@factory()
def get_closed_form_visser() -> Config:
    """Visser predictor, ridge 0 (Richemond et al. 2023, Sec. 4.3; Table 2's best Visser cell:
    68.4). Their step and iteration count are not in their main text: 50 iterations of step 0.5
    on F / ||F||_F are chosen here (relative error below 1e-3 for eigenvalues above 2 % of
    ||F||_F; smaller ones stay above their square root, a null mode at
    sqrt(||F||_F) / (0.5 x 52))."""
    return get_byol().replace(name="closed_form_visser", closed_form="visser",
                              closed_form_iterations=50, visser_step=0.5, closed_form_ridge=0.0,
                              **_CLOSED_FORM)


def get_config(name: str, **overrides) -> Config:
    """The one resolver of a run's definition: the named factory (``"direct_pred"``,
    ``"get_direct_pred"``, or a ``train.py --model`` name such as ``"directpred"``),
    then ``overrides`` (Config fields; a ``dataset`` brings its preset:
    :func:`config.with_dataset`). ``train.py``, ``reproduce_small.py``, the benchmarks and
    the Python API all build their Config through it, so the same name, dataset and
    overrides give the same Config everywhere."""
    key = name[4:] if name.startswith("get_") else name
    key = MODELS.get(key, key)
    if key not in FACTORIES:
        raise ValueError(f"Unknown config {name!r}. Valid names: {sorted(FACTORIES)} "
                         f"(or a --model name: {sorted(MODELS)})")
    base = FACTORIES[key]()
    if "dataset" in overrides:
        return with_dataset(base, **overrides)
    return base.replace(**overrides)
