"""experiments/callbacks.py: the checkpoint, the monitors, the NaN guard, the epoch line."""

import json
import os

import keras
import numpy as np
import pytest

from experiments import checkpoint as ckpt


class _Pair(keras.Model):
    """Dense layers of the same shape, created (and so listed) in ``order``."""

    def __init__(self, order, units=3):
        super().__init__(name="pair")
        self.parts = {}
        for name in order:
            self.parts[name] = keras.layers.Dense(units, name=name)
            self.parts[name].build((None, 3))
        self.built = True

    def call(self, x):
        return sum(layer(x) for layer in self.parts.values())


def _pair(order, units=3, seed=0):
    model = _Pair(order, units)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    model.optimizer.build(model.trainable_variables)
    rng = np.random.default_rng(seed)
    for _, v in ckpt.training_state(model):
        if "float" in str(v.dtype):
            v.assign(rng.normal(size=v.shape).astype(str(v.dtype)))
    return model


def _by_name(model):
    return {name: np.array(v.numpy()) for name, v in ckpt.training_state(model)}


def _save(model, directory):
    saver = ckpt.RunCheckpoint(directory)
    saver.set_model(model)
    saver.on_epoch_end(0, {"loss": 1.0})


def test_checkpoint_restores_same_shaped_variables_by_path_not_position(tmp_path):
    saved = _pair(["a", "b"])
    _save(saved, str(tmp_path))
    swapped = _pair(["b", "a"], seed=1)  # the same paths, listed in the other order
    assert [v.path for v in swapped.weights] != [v.path for v in saved.weights]
    assert ckpt.RunCheckpoint(str(tmp_path)).restore(swapped) == 1
    expected, restored = _by_name(saved), _by_name(swapped)
    assert sorted(expected) == sorted(restored)
    assert any("momentum" in name for name in expected)  # the optimizer slots too
    for name, value in expected.items():
        np.testing.assert_array_equal(restored[name], value, err_msg=name)


@pytest.mark.parametrize("order, units, message", [
    (["a", "b", "c"], 3, r"it has no array for 'model/c/.*'\.$"),
    (["a"], 3, r"it holds '.*/b/.*', which the model lacks\.$"),
    (["a", "b"], 4, r"'model/a/a/kernel' has shape \(3, 3\), the model's \(3, 4\)\.$"),
])
def test_checkpoint_refuses_a_missing_extra_or_reshaped_variable(tmp_path, order, units,
                                                                 message):
    _save(_pair(["a", "b"]), str(tmp_path))
    other = _pair(order, units)
    before = _by_name(other)
    with pytest.raises(ValueError, match=r"^The checkpoint .* does not match this model: "
                       + message) as error:
        ckpt.RunCheckpoint(str(tmp_path)).restore(other)
    assert "\n" not in str(error.value)
    for name, value in _by_name(other).items():  # nothing was assigned
        np.testing.assert_array_equal(value, before[name])


def _write_format_1(model, directory, names):
    os.makedirs(directory)
    arrays = [np.array(v.numpy()) for _, v in ckpt.training_state(model)]
    np.savez(os.path.join(directory, "state-1.npz"),
             **{f"a{i:05d}": a for i, a in enumerate(arrays)})
    meta = {"epoch": 1, "arrays": "state-1.npz", "rows": [{"epoch": 1, "loss": 1.0}]}
    if names is not None:
        meta["names"] = names
    with open(os.path.join(directory, "state.json"), "w") as f:
        json.dump(meta, f)


def test_checkpoint_of_the_positional_format_1_is_read_by_its_names(tmp_path):
    saved = _pair(["a", "b"])
    # Format 1 stored the raw names: the optimizer numbered by the process that saved.
    names = [name.replace("optimizer/0.sgd/", "optimizer/sgd_7/")
             for name, _ in ckpt.training_state(saved)]
    assert any("sgd_7" in name for name in names)
    _write_format_1(saved, str(tmp_path / "named"), names)
    swapped = _pair(["b", "a"], seed=1)
    assert ckpt.RunCheckpoint(str(tmp_path / "named")).restore(swapped) == 1
    for name, value in _by_name(saved).items():
        np.testing.assert_array_equal(_by_name(swapped)[name], value, err_msg=name)
    _write_format_1(saved, str(tmp_path / "nameless"), None)
    with pytest.raises(ValueError, match=r"positional format 1 without the names"):
        ckpt.RunCheckpoint(str(tmp_path / "nameless")).restore(swapped)
