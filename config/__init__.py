"""Run configuration: the frozen :class:`Config`, composed of groups that check themselves,
and the named experiment factories.

Layout (each module imports only the ones above it, and no TensorFlow, Keras or NumPy):

- :mod:`config.methods`: the methods and predictors, each with the fields it uses.
- :mod:`config.groups`: the frozen groups (:class:`Data`, :class:`AugmentParams`,
  :class:`Encoder`, ..., :class:`Numerics`), each validating all of its fields.
- :mod:`config.versions`: older config.json formats read as the current one.
- :mod:`config.core`: :class:`Config`, every group flat in one dataclass, and
  :data:`OPTION_RULES`.
- :mod:`config.presets`: dataset presets, applied by :func:`with_dataset`.
- :mod:`config.factories`: ``get_byol``, ``get_direct_pred``, ..., the one registry of
  their names (:data:`FACTORIES`, with the ``--model`` names :data:`MODELS`) and
  :func:`get_config`.
- :mod:`config.assignments`: :func:`parse_assignment` (``train.py --set FIELD=VALUE``).

``train.py`` starts from a factory and overrides fields from its flags; the effective config
is saved as ``config.json`` beside the results and read back with :meth:`Config.from_json`.
"""

from config.assignments import parse_assignment
from config.core import _FIELD_DEFAULTS, OPTION_RULES, Config
from config.factories import (FACTORIES, MODELS, factory, get_barlow_twins, get_byol,
                              get_byol_baseline, get_closed_form_ns, get_closed_form_ns2,
                              get_closed_form_stiefel, get_closed_form_visser, get_config,
                              get_deeper_projection,
                              get_direct_copy, get_direct_copy_no_ema, get_direct_pred,
                              get_direct_pred_freq_5, get_direct_set,
                              get_direct_set_copy, get_direct_set_no_ema,
                              get_eigenspace_experiment,
                              get_eigenspace_experiment_with_symmetry, get_isoloss,
                              get_isoloss_no_ema, get_moco, get_simclr,
                              get_simsiam, get_simsiam_baseline, get_simsiam_baseline_symmetric,
                              get_simsiam_pred, get_simsiam_symmetric,
                              get_simsiam_symmetric_predictor, get_supcon, get_swav)
from config.groups import (AUGMENT_ON, BACKBONES, CIFAR_MEAN, CIFAR_STD, CLOSED_FORMS,
                           DIRECTCOPY_NORMS,
                           DIRECTSET_EPS_AT, EMA_SCHEDULES, GROUPS,
                           LOSSES, LR_SCALINGS, LR_SCHEDULES, MIXED_PRECISION, OPTIMIZERS,
                           PROBE_FIELDS, PROBE_PROTOCOLS, PROJECTORS, STEMS, STRATEGIES,
                           TARGET_INITS, WEIGHT_INITS, AugmentParams, Data, Encoder, Monitors,
                           Numerics, Objective, Optimisation, Predictor, Probe, Projector,
                           Target)
from config.methods import METHOD_SPECS, METHODS, PREDICTOR_SPECS, PREDICTORS
from config.presets import DATASET_PRESETS, dataset_preset, with_dataset
from config.versions import CONFIG_VERSION
