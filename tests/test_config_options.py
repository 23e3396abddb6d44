"""Every option a run does not use is refused (config.OPTION_RULES), one case at a time;
config.json of the current and of the previous format; one resolver for a run's definition."""

import json
import os
import subprocess
import sys
import warnings

import pytest

import config as config_lib
from config import Config, get_config, with_dataset
from experiments import reproduction

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data")


# ---- options a method does not use ------------------------------------------------

@pytest.mark.parametrize("factory, field, value", [
    # the cases of issue #23, each with a method that would ignore it
    ("direct_pred", "symmetry", True),
    ("direct_copy", "symmetry", True),
    ("simclr", "predictor_lr_multiplier", 10.0),
    ("direct_pred", "predictor_lr_multiplier", 10.0),
    ("byol", "predictor_eps", 0.05),
    ("byol", "predictor_freq", 5),
    ("simsiam", "predictor_eps", 0.05),
    ("byol", "temperature", 0.5),
    ("barlow_twins", "temperature", 0.5),
    ("byol", "queue_size", 128),
    ("simclr", "queue_size", 128),
    ("byol", "barlow_lambda", 0.01),
    ("moco", "barlow_scale", 0.5),
    # and the rest of the table
    ("byol_baseline", "predictor_hidden_dim", 64),
    ("simclr", "predictor_hidden_dim", 64),
    ("simclr", "predictor_weight_decay", 0.0),
    ("direct_pred", "predictor_weight_decay", 0.0),
    ("direct_copy", "predictor_power", 1.0),
    ("byol", "corr_rho", 0.5),
    ("byol", "corr_center", True),
    ("simclr", "ema_tau", 0.99),
    ("simsiam", "ema_schedule", "cosine"),
    ("simclr", "target_init", "copy"),
    ("moco", "num_prototypes", 100),
    ("byol", "sinkhorn_epsilon", 0.1),
    ("simclr", "sinkhorn_iterations", 5),
    ("moco", "queue_start_epoch", 3),
    ("byol", "freeze_prototypes_epochs", 2),
    ("byol", "lars_eta", 0.02),
    ("byol", "adam_beta_1", 0.8),
    ("byol", "adam_beta_2", 0.99),
    ("byol", "warmup_epochs", 2),
    ("byol", "final_lr", 0.001),
    ("byol", "blur_sigma", (0.5, 1.0)),
    ("byol", "knn_k", 20),
    ("byol", "eigenspace_every", 2),
    ("simclr", "loss", "l2"),
])
def test_an_option_the_run_does_not_use_is_refused_naming_it(factory, field, value):
    base = get_config(factory, **({"knn_every": 0} if field.startswith("knn") else {}))
    with pytest.raises(ValueError) as error:
        base.replace(**{field: value})
    message = str(error.value)
    assert message.startswith(f"Config.{field} applies to ")
    assert f"method={base.method!r}" in message and f"Received: {field}={value!r}" in message
    assert "\n" not in message


@pytest.mark.parametrize("factory, changes", [
    ("byol", {"symmetry": True, "predictor_lr_multiplier": 10.0,
              "predictor_weight_decay": 0.0, "predictor_hidden_dim": 64}),
    ("byol_baseline", {"symmetry": True, "predictor_lr_multiplier": 10.0}),
    ("direct_pred", {"predictor_eps": 0.05, "predictor_freq": 5, "predictor_power": 1.0,
                     "corr_rho": 0.5, "corr_center": True}),
    ("direct_copy", {"predictor_eps": 0.05, "corr_rho": 0.9}),
    ("byol_baseline", {"eigenspace": True, "corr_rho": 0.5, "eigenspace_every": 2}),
    ("byol", {"ema_schedule": "cosine", "target_init": "copy"}),
    ("moco", {"temperature": 0.5, "queue_size": 128, "ema_tau": 0.9,
              "ema_schedule": "cosine"}),
    ("swav", {"temperature": 0.2, "queue_size": 512, "queue_start_epoch": 1,
              "num_prototypes": 100, "sinkhorn_epsilon": 0.1, "sinkhorn_iterations": 5,
              "freeze_prototypes_epochs": 0}),
    ("barlow_twins", {"barlow_lambda": 0.01, "barlow_scale": 0.5, "lars_eta": 0.01}),
    ("byol", {"optimizer": "adamw", "adam_beta_1": 0.8, "adam_beta_2": 0.99}),
    ("byol", {"lr_schedule": "warmup_cosine", "warmup_epochs": 2, "final_lr": 1e-3}),
    ("byol", {"blur_prob": 0.5, "blur_sigma": (0.5, 1.0), "blur_kernel_size": 5}),
    ("byol", {"knn_k": 20, "knn_temperature": 0.5}),
])
def test_options_are_accepted_where_they_are_used(factory, changes):
    config = get_config(factory, **changes)
    assert all(getattr(config, k) == v for k, v in changes.items())


def test_every_factory_and_scaled_down_row_satisfies_the_rules():
    for name in config_lib.FACTORIES:
        get_config(name)
    shared = dict(epochs_pretraining=20, eigenspace=True, eigenspace_every=4, knn_every=20)
    for row in reproduction.SCALED_DOWN_ROWS + reproduction.FAMILY_ROWS:
        config = reproduction.scaled_down_config(row, shared)
        assert config.name == get_config(row.factory).name
        assert all(getattr(config, k) == v for k, v in row.overrides.items())
        assert bool(row.overrides) == bool(row.reason) or row.name == "random_init"


def test_every_rule_names_real_fields():
    fields = set(config_lib._FIELD_DEFAULTS)
    for names, _, who in config_lib.OPTION_RULES:
        assert set(names) <= fields, names
        assert who


def test_cli_refuses_an_ignored_flag_in_one_line_before_anything(tmp_path):
    done = subprocess.run(
        [sys.executable, "train.py", "--model", "directpred", "--symmetry", "--name", "x",
         "--results_dir", str(tmp_path / "results")],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "train.py: error: Config.symmetry applies to predictor='mlp' or 'linear' only; this run "
        "would ignore it (method='noncontrastive', predictor='directpred', ema_tau=0.996, "
        "optimizer='sgd'). Received: symmetry=True")
    assert not (tmp_path / "results").exists()


# ---- config.json formats ----------------------------------------------------------

_V3_RUN = dict(dataset="folder", data_dir="/data/cifar10", width=0.125,
               max_train_examples=10000, epochs_pretraining=20, epochs_finetuning=100,
               eigenspace=True, eigenspace_every=4, knn_every=20, predictor_eps=0.01)


def test_config_json_of_the_current_version_loads_as_written():
    with open(os.path.join(DATA, "config_v4.json")) as f:
        text = f.read()
    config = Config.from_json(text)
    assert config.version == config_lib.CONFIG_VERSION == 4
    assert config == get_config("direct_pred", **_V3_RUN)
    # Fields added since (DirectSet, IsoLoss, the closed-form predictors: docs/successors.md)
    # have defaults that keep the run it describes; they are written with those defaults (no
    # version bump).
    written = json.loads(config.to_json())
    new = {"isoloss": False, "directset_alpha": 0.5, "directset_eps_at": "before_power",
           "closed_form": "newton_schulz", "closed_form_iterations": 9,
           "closed_form_ridge": 0.0, "closed_form_ema": 0.0, "visser_step": 0.5}
    assert {k: written.pop(k) for k in new} == new
    assert written == json.loads(text)


def test_config_json_of_version_3_loads_silently_unless_it_ran_directcopy():
    with open(os.path.join(DATA, "config_v3.json")) as f:
        values = json.load(f)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Config.from_dict(values) == get_config("direct_pred", **_V3_RUN)
    copy = {**values, "predictor": "directcopy", "predictor_power": 0.5}
    with pytest.warns(UserWarning, match="directcopy_norm='frobenius'"):
        config = Config.from_dict(copy)
    assert (config.version, config.directcopy_norm) == (4, "frobenius")
    assert get_config("direct_copy").directcopy_norm == "spectral"


def test_config_json_of_version_2_still_describes_the_run_that_wrote_it():
    """The same run written by version 2: the fields new in version 3 get the values that run
    had (Keras initialisers and BN constants), the warning names them, and nothing else moves."""
    with open(os.path.join(DATA, "config_v2.json")) as f:
        values = json.load(f)
    with pytest.warns(UserWarning, match=r"version 2: fields new in versions 3 and 4 keep the values "
                      r"the run had \(weight_init='keras', bn_epsilon=0.001, bn_momentum=0.99, "
                      r"probe_protocol='official'\)"):
        config = Config.from_dict(values)
    assert config.version == 4
    assert (config.weight_init, config.bn_epsilon, config.bn_momentum) == ("keras", 1e-3, 0.99)
    # It ignored the MLP predictor's BN and the between-recomputation training: defaults.
    assert not config.predictor_bn_affine and config.predictor_trained_between
    today = get_config("direct_pred", **_V3_RUN)
    changed = {k for k, v in config.to_dict().items() if v != getattr(today, k)}
    # Every other field is what version 2 wrote (the CIFAR std and target start included).
    assert changed == {"weight_init", "bn_epsilon", "bn_momentum", "normalize_std",
                       "target_init", "probe_protocol"}
    assert config.normalize_std == tuple(values["normalize_std"])
    assert config.target_init == values["target_init"] == "copy"


def test_version_2_freq_5_run_keeps_its_frozen_predictor_and_a_byol_run_its_affine_bn():
    with open(os.path.join(DATA, "config_v2.json")) as f:
        values = json.load(f)
    with pytest.warns(UserWarning, match="predictor_trained_between=False"):
        freq5 = Config.from_dict({**values, "predictor_freq": 5})
    assert freq5.predictor_trained_between is False
    mlp = {k: v for k, v in values.items()
           if k not in ("predictor_eps", "predictor_power", "predictor_freq", "corr_rho",
                        "corr_center", "eigenspace", "eigenspace_every")}
    with pytest.warns(UserWarning, match="predictor_bn_affine=True"):
        byol = Config.from_dict({**mlp, "predictor": "mlp"})
    assert byol.predictor_bn_affine is True


def test_config_json_of_version_1_resets_the_options_its_run_ignored():
    with open(os.path.join(DATA, "config_v1.json")) as f:
        values = json.load(f)
    assert values["version"] == 1 and values["symmetry"] is True
    with pytest.warns(UserWarning, match="symmetry=True, temperature=0.5, barlow_lambda=0.01"):
        config = Config.from_dict(values)
    with open(os.path.join(DATA, "config_v2.json")) as f:
        assert config == Config.from_json(f.read())


def test_unknown_config_version_is_refused():
    with pytest.raises(ValueError, match="Received: version=7"):
        Config.from_dict({**Config().to_dict(), "version": 7})


# ---- one resolver ------------------------------------------------------------------

@pytest.mark.parametrize("dataset", sorted(config_lib.DATASET_PRESETS) + ["cifar10", "folder"])
@pytest.mark.parametrize("model", sorted(config_lib.MODELS))
def test_cli_and_api_resolve_the_same_config_for_every_dataset_preset(dataset, model):
    sys.path.insert(0, ROOT)
    import train

    flags = {"model": model, "dataset": dataset, "width": 0.5}
    cli = train.make_config(flags)
    api = get_config(model, dataset=dataset, width=0.5)
    moved = with_dataset(get_config(config_lib.MODELS[model]), dataset, width=0.5)
    assert cli == api == moved
    for field, value in config_lib.dataset_preset(dataset).items():
        assert getattr(api, field) == value
    if dataset == "stl10":
        # The official STL-10 transform: every view blurred, no normalisation.
        assert (api.image_size, api.blur_prob, api.normalize_std) == (96, 1.0, (1.0, 1.0, 1.0))


def test_a_preset_never_overrides_a_field_given_with_the_dataset():
    config = get_config("direct_pred", dataset="stl10", image_size=64, blur_prob=0.0)
    assert (config.image_size, config.blur_prob, config.jitter) == (64, 0.0, (0.8, 0.8, 0.8, 0.2))
    # Only with_dataset (and get_config's dataset) brings a preset, never replace.
    assert config.replace(dataset="stl10").image_size == 64
    assert config.replace(width=0.5).image_size == 64
    assert get_config("byol").replace(dataset="stl10").image_size == 32
    assert with_dataset(config, "stl10").image_size == 96
    assert with_dataset(config, "stl10", image_size=48).image_size == 48
