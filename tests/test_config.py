import dataclasses
import json

import pytest

import config as config_lib
from config import Config, get_config


@pytest.mark.parametrize("name", sorted(config_lib.FACTORIES))
def test_every_factory_round_trips_through_json_exactly(name):
    config = get_config(name)
    assert config.name == name
    again = Config.from_json(config.to_json())
    assert again == config
    assert json.loads(again.to_json()) == json.loads(config.to_json())


def test_get_config_accepts_factory_function_names():
    assert get_config("get_direct_pred") == config_lib.get_direct_pred()


def test_unknown_config_lists_valid_names():
    with pytest.raises(ValueError) as error:
        get_config("byol2")
    assert "byol2" in str(error.value)
    for name in config_lib.FACTORIES:
        assert name in str(error.value)


def test_model_names_map_to_factories():
    assert set(config_lib.MODELS) == {"byol", "simsiam", "directpred", "directcopy", "simclr",
                                      "supcon", "swav", "moco", "barlow_twins", "directset",
                                      "isoloss", "closed_form"}
    for factory in config_lib.MODELS.values():
        assert factory in config_lib.FACTORIES


def test_published_defaults():
    c = Config()
    assert (c.learning_rate, c.momentum, c.weight_decay, c.batch_size) == (0.03, 0.9, 4e-4, 128)
    assert (c.ema_tau, c.corr_rho, c.predictor_freq) == (0.996, 0.3, 1)
    assert (c.probe_learning_rate, c.probe_weight_decay, c.epochs_finetuning) == (3e-4, 1e-3, 50)
    assert c.width == 1.0 and c.backbone == "resnet18"


def test_factories_differ_where_the_paper_says():
    dp, dp5, sp = (get_config(n) for n in ("direct_pred", "direct_pred_freq_5", "simsiam_pred"))
    assert dp.predictor == sp.predictor == "directpred" and dp.uses_ema and not sp.uses_ema
    assert dp5.predictor_freq == 5
    dc = get_config("direct_copy")
    assert (dc.predictor, dc.predictor_eps, dc.corr_rho) == ("directcopy", 0.3, 0.5)
    assert not get_config("direct_copy_no_ema").uses_ema
    assert get_config("simsiam").ema_tau == 0.0
    assert get_config("byol_baseline").predictor == "linear"
    assert get_config("simsiam_baseline").predictor == "linear"
    assert get_config("deeper_projection").projector == "deeper"
    stable = get_config("simsiam_symmetric_predictor")
    assert stable.symmetry and stable.predictor_lr_multiplier == 10.0


@pytest.mark.parametrize("field,value", [
    ("predictor", "quadratic"), ("mixed_precision", "fp8"), ("projector", "wide"),
    ("augment_on", "gpu"), ("ema_tau", 1.0), ("batch_size", 0), ("width", 0),
    ("max_train_examples", 0), ("predictor_freq", 0), ("version", 99),
    ("optimizer", "rmsprop"), ("lr_schedule", "step"), ("lr_scaling", "sqrt"),
    ("learning_rate", 0.0), ("weight_decay", -1e-4), ("predictor_weight_decay", -1.0),
    ("momentum", 1.0), ("warmup_epochs", -1), ("warmup_lr", -0.1), ("final_lr", -0.1),
    ("lars_eta", 0.0), ("adam_beta_1", 1.0), ("adam_beta_2", -0.5),
    ("predictor_eps", -0.01), ("predictor_lr_multiplier", 0.0), ("corr_rho", 1.0),
    ("predictor_power", 0.0)])
def test_bad_values_name_the_field_and_value(field, value):
    with pytest.raises(ValueError) as error:
        Config().replace(**{field: value})
    assert field in str(error.value) and repr(value) in str(error.value)


def test_predictor_power_applies_to_directpred_only():
    assert get_config("direct_pred").replace(predictor_power=1.0).predictor_power == 1.0
    for name in ("direct_copy", "byol", "byol_baseline"):
        with pytest.raises(ValueError) as error:
            get_config(name).replace(predictor_power=1.0)
        assert "predictor_power applies to predictor='directpred' only" in str(error.value)
        assert "predictor_power=1.0" in str(error.value)


def test_optimisation_defaults_are_the_papers():
    for name in config_lib.FACTORIES:
        c = get_config(name)
        if c.method != "noncontrastive" or c.predictor == "directset":
            continue  # the wider family and the successors have their own published recipes
        assert (c.optimizer, c.lr_schedule, c.lr_scaling, c.warmup_epochs) == (
            "sgd", "constant", "none", 0), name


def test_schedule_fields_need_warmup_cosine():
    for field, value in (("warmup_epochs", 5), ("warmup_lr", 0.01), ("final_lr", 1e-4)):
        with pytest.raises(ValueError, match=f"{field}.*warmup_cosine"):
            Config().replace(**{field: value})
        assert getattr(Config().replace(lr_schedule="warmup_cosine", **{field: value}),
                       field) == value
    for optimizer in config_lib.OPTIMIZERS:
        c = Config().replace(optimizer=optimizer, lr_schedule="warmup_cosine", warmup_epochs=2,
                             lr_scaling="linear")
        assert Config.from_json(c.to_json()) == c


def test_unknown_fields_are_rejected():
    with pytest.raises(ValueError, match="learning_rat"):
        Config().replace(learning_rat=0.1)
    with pytest.raises(ValueError, match="bogus"):
        Config.from_dict({**Config().to_dict(), "bogus": 1})


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().learning_rate = 1.0


@pytest.mark.parametrize("field,value", [
    ("method", "byol2"), ("temperature", 0.0), ("sinkhorn_epsilon", -0.1),
    ("queue_size", -1), ("queue_start_epoch", -1), ("freeze_prototypes_epochs", -1),
    ("num_prototypes", 0), ("sinkhorn_iterations", 0)])
def test_method_fields_are_validated(field, value):
    with pytest.raises(ValueError, match=f"{field}={value!r}"):
        Config().replace(**{field: value})


@pytest.mark.parametrize("text, expected", [
    ("predictor_eps=0.05", ("predictor_eps", 0.05)),
    ("seed=3", ("seed", 3)),
    ("corr_center=True", ("corr_center", True)),
    ("symmetry=false", ("symmetry", False)),
    ("predictor=directcopy", ("predictor", "directcopy")),
    ("predictor_weight_decay=none", ("predictor_weight_decay", None)),
    ("predictor_weight_decay=1e-5", ("predictor_weight_decay", 1e-5)),
    ("crop_scale=0.2,1.0", ("crop_scale", (0.2, 1.0))),
])
def test_parse_assignment_types_the_value_as_the_field(text, expected):
    name, value = config_lib.parse_assignment(text)
    assert (name, value) == expected
    assert type(value) is type(expected[1])
    # F's options need a run that uses F (OPTION_RULES).
    base = get_config("direct_pred") if name in ("predictor_eps", "corr_center") else Config()
    assert base.replace(**{name: value}).to_dict()[name] == value


@pytest.mark.parametrize("text, message", [
    ("predictor_eps", "Expected FIELD=VALUE with a Config field. Received: 'predictor_eps'"),
    ("eps=0.1", "Received: 'eps=0.1'. Valid fields: ['adam_beta_1'"),
    ("predictor_eps=abc", "Config.predictor_eps takes a value of type float. "
                          "Received: predictor_eps='abc'"),
    ("seed=1.5", "Config.seed takes a value of type int. Received: seed='1.5'"),
    ("corr_center=yes", "Config.corr_center takes a value of type bool. "
                        "Received: corr_center='yes'"),
    ("crop_scale=0.2", "Config.crop_scale takes a value of type Tuple[float, float]. "
                       "Received: crop_scale='0.2'"),
    ("seed=none", "Config.seed takes a value of type int. Received: seed='none'"),
])
def test_parse_assignment_rejects_bad_input_naming_it(text, message):
    with pytest.raises(ValueError) as error:
        config_lib.parse_assignment(text)
    assert message in str(error.value)


# ---- groups: each checks all of its fields, whatever run it belongs to ----------------

@pytest.mark.parametrize("field, value, rule", [
    ("flip_prob", 1.5, "in [0, 1]"), ("crop_scale", (0.9, 0.1), "an increasing pair"),
    ("blur_kernel_size", 4, "odd and >= 1"), ("normalize_std", (0.2, 0.0, 0.2), "3 values > 0"),
    # Options of predictors this run (BYOL, MLP predictor) does not use: still range-checked.
    ("predictor_freq", 0, ">= 1"), ("predictor_power", 0.0, "> 0"), ("corr_rho", 1.0, "in [0, 1)"),
    ("predictor_eps", -0.1, ">= 0"), ("temperature", 0.0, "> 0")])
def test_every_field_is_range_checked_in_any_run(field, value, rule):
    with pytest.raises(ValueError) as error:
        Config(**{field: value})
    assert str(error.value).startswith(f"Config.{field} must be {rule}")
    assert str(error.value).endswith(f"Received: {field}={value!r}")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("group, field, value", [
    (config_lib.Predictor, "corr_rho", 1.0), (config_lib.Predictor, "predictor_freq", 0),
    (config_lib.AugmentParams, "flip_prob", -0.1), (config_lib.Target, "ema_tau", 1.0),
    (config_lib.Optimisation, "momentum", 1.0), (config_lib.Probe, "probe_protocol", "x"),
    (config_lib.Data, "max_train_examples", 0), (config_lib.Encoder, "bn_epsilon", 0.0)])
def test_a_group_built_alone_checks_its_fields(group, field, value):
    with pytest.raises(ValueError, match=rf"^{group.__name__}\.{field} must be .*Received: "):
        group(**{field: value})
    group()  # the defaults are valid


def test_every_field_belongs_to_one_group_and_groups_give_the_defaults():
    owners = {}
    for group in config_lib.GROUPS:
        for f in dataclasses.fields(group):
            assert f.name not in owners, (f.name, owners.get(f.name), group)
            owners[f.name] = group
            assert getattr(Config(), f.name) == f.default
    assert set(owners) | {"name", "version"} == set(config_lib._FIELD_DEFAULTS)
    assert config_lib.PROBE_FIELDS == tuple(f.name for f in dataclasses.fields(config_lib.Probe))


def test_method_and_predictor_declarations_name_real_fields():
    fields = set(config_lib._FIELD_DEFAULTS)
    assert config_lib.METHODS == tuple(config_lib.METHOD_SPECS)
    for spec in (*config_lib.METHOD_SPECS.values(), *config_lib.PREDICTOR_SPECS.values()):
        assert set(spec.uses) <= fields, spec


def test_factories_are_one_registry_with_their_model_names():
    for name, factory in config_lib.FACTORIES.items():
        assert factory.__name__ == f"get_{name}" and getattr(config_lib, f"get_{name}") is factory
    assert set(config_lib.MODELS.values()) <= set(config_lib.FACTORIES)
    assert get_config("directpred") == get_config("get_direct_pred")
