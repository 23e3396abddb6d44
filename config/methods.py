"""The methods and predictors a run can be, each with the Config fields it uses.

An option that only some runs use is declared here (or, for a group's own switches, next to
that group in :mod:`config.groups`) by the parts that use it; :func:`unused_options` names
every option set away from its default in a run where no declaring part is active:
:class:`config.Config` refuses it, since an option accepted and ignored would make a saved
config.json lie. Imports nothing but the standard library.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Optional, Tuple


class Uses(NamedTuple):
    """Config ``fields`` used by a run for which ``active(config)`` holds; ``who`` names
    that run in error messages."""

    fields: Tuple[str, ...]
    active: Callable[[Any], bool]
    who: str


class Method(NamedTuple):
    """One value of ``Config.method``: the fields it uses and its own value checks."""

    doc: str
    uses: Tuple[str, ...]
    #: Fields used only under a further condition of this method's runs.
    when: Tuple[Uses, ...] = ()
    #: ``check(config)`` raises ``ValueError`` for a value this method cannot run with.
    check: Optional[Callable[[Any], None]] = None


class Predictor(NamedTuple):
    """One value of ``Config.predictor`` (non-contrastive runs): the fields it uses."""

    doc: str
    uses: Tuple[str, ...]
    #: Wp is computed from the correlation F, not trained by gradient descent.
    computed: bool = False


def _check_moco(config) -> None:
    if config.ema_tau <= 0.0:
        raise ValueError("Config.ema_tau must be > 0 for MoCo (its key encoder is the "
                         f"momentum copy). Received: ema_tau={config.ema_tau!r}")
    if config.queue_size < 1:
        raise ValueError("Config.queue_size must be >= 1 for MoCo. "
                         f"Received: queue_size={config.queue_size!r}")


_TARGET = ("ema_tau", "ema_schedule", "target_init")

#: ``Config.method`` -> its declaration; the model classes: ``models/registry.py``.
METHOD_SPECS: Mapping[str, Method] = {
    "noncontrastive": Method(
        "BYOL / SimSiam / DirectPred / DirectCopy, chosen by the predictor and target fields "
        "(Tian et al. 2021, Sec. 2 and 4)", ("predictor", "eigenspace", "loss", "ema_tau"),
        when=(Uses(_TARGET[1:], lambda c: c.ema_tau > 0.0, "a momentum target (ema_tau > 0)"),)),
    "simclr": Method("SimCLR: NT-Xent", ("temperature",)),
    "supcon": Method("Supervised contrastive", ("temperature",)),
    "swav": Method("SwAV: prototypes, Sinkhorn, optional queue",
                   ("temperature", "queue_size", "queue_start_epoch", "num_prototypes",
                    "sinkhorn_epsilon", "sinkhorn_iterations", "freeze_prototypes_epochs")),
    "moco": Method("MoCo v2: momentum key encoder, queue of negatives",
                   ("temperature", "queue_size") + _TARGET, check=_check_moco),
    "barlow_twins": Method("Barlow Twins: cross-correlation to identity",
                           ("barlow_lambda", "barlow_scale")),
}

_TRAINED = ("symmetry", "predictor_lr_multiplier", "predictor_weight_decay")
#: ``isoloss``: the IsoLoss gradient (Halvagal et al. 2023) needs a predictor computed from F.
_COMPUTED = ("predictor_eps", "predictor_freq", "corr_rho", "corr_center", "isoloss")

#: ``Config.predictor`` -> its declaration (models/predictors.py, models/siamese.py).
PREDICTOR_SPECS: Mapping[str, Predictor] = {
    "mlp": Predictor("2-layer MLP trained by gradient descent (BYOL, SimSiam)",
                     ("predictor_hidden_dim", "predictor_bn_affine") + _TRAINED),
    "linear": Predictor("one bias-free Dense Wp trained by gradient descent", _TRAINED),
    "directpred": Predictor("Wp from the eigen-decomposition of F (Sec. 4, Eq. 18)",
                            _COMPUTED + ("predictor_power",), computed=True),
    "directcopy": Predictor("Wp = F / norm(F) + eps I (Wang et al. 2021; DirectSet(1))",
                            _COMPUTED + ("directcopy_norm",), computed=True),
    "directset": Predictor("Wp = U diag(p(s / s_max)) U^T, p a power alpha of the normalised "
                           "eigenvalue with eps before or after it (Wang et al. 2021, "
                           "DirectSet(alpha); fmi-basel/implicit-var-reg dp_alpha)",
                           _COMPUTED + ("directset_alpha", "directset_eps_at"), computed=True),
    "closed_form": Predictor("Wp from F by an inverse-free matrix iteration: Newton-Schulz "
                             "(F^1/2), NS^2 (F^1/4), Stiefel (polar factor), Visser (F^1/2), "
                             "plus a ridge and an optional EMA of Wp (Richemond et al. 2023)",
                             tuple(f for f in _COMPUTED if f != "predictor_eps")
                             + ("closed_form", "closed_form_iterations", "closed_form_ridge",
                                "closed_form_ema"), computed=True),
}

METHODS = tuple(METHOD_SPECS)
PREDICTORS = tuple(PREDICTOR_SPECS)
COMPUTED_PREDICTORS = tuple(n for n, p in PREDICTOR_SPECS.items() if p.computed)


def _method_rules():
    for name, method in METHOD_SPECS.items():
        yield Uses(method.uses, lambda c, n=name: c.method == n, f"method {name!r}")
        for extra in method.when:
            yield Uses(extra.fields, lambda c, n=name, e=extra: c.method == n and e.active(c),
                       extra.who)
        if name == "noncontrastive":  # its predictors
            for kind, predictor in PREDICTOR_SPECS.items():
                yield Uses(predictor.uses,
                           lambda c, k=kind: c.method == "noncontrastive" and c.predictor == k,
                           f"predictor={kind!r}")


#: The declarations of the methods and predictors, as :class:`Uses`.
RULES = tuple(_method_rules())


def _or_list(items) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def describe_users(whos) -> str:
    """``"method 'simclr', 'supcon' or 'moco'"`` from the ``who`` of each declaration."""
    prefixes = {}
    for who in dict.fromkeys(whos):
        prefix, quote, rest = who.partition("'")
        prefixes.setdefault(prefix if quote else who, []).append(quote + rest)
    return _or_list([prefix + _or_list(values) if values[0] else prefix
                     for prefix, values in prefixes.items()])


def unused_options(config, rules) -> list:
    """``[(field, who uses it)]``: the declared fields no active rule of ``rules`` uses
    in ``config`` (any object with the Config attributes)."""
    by_field = {}
    for rule in rules:
        for field in rule.fields:
            by_field.setdefault(field, []).append(rule)
    return [(field, describe_users([r.who for r in users]))
            for field, users in by_field.items() if not any(r.active(config) for r in users)]
