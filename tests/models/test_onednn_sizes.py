"""Every advertised width x image size trains on the default (oneDNN) CPU build.

TensorFlow 2.21's oneDNN kernels crash the process on a 1x1 stride-2
convolution's filter gradient with < 16 input channels at >= 64 px (issue 29);
models/conv.py computes that convolution another way. The sweep runs in a
subprocess so that a crash fails this test instead of killing pytest.
"""

import os
import subprocess
import sys

import numpy as np

from models.conv import PointwiseConv2D

HERE = os.path.dirname(os.path.abspath(__file__))
WIDTHS = (0.0625, 0.125, 0.25)
SIZES = (32, 40, 48, 64, 96)


def test_one_train_step_at_every_width_and_size_in_a_subprocess():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": "1"}
    done = subprocess.run(
        [sys.executable, os.path.join(HERE, "size_sweep.py"), ",".join(map(str, WIDTHS)),
         ",".join(map(str, SIZES))], capture_output=True, text=True, env=env, timeout=900)
    lines = done.stdout.split("\n")
    started = [line for line in lines if line.startswith("start")]
    assert done.returncode == 0, (f"exit {done.returncode} at {started[-1:]}: "
                                  f"{done.stderr[-1500:]}")
    ok = {tuple(line.split()[1:]) for line in lines if line.startswith("ok")}
    assert ok == {(str(w), str(s)) for w in WIDTHS for s in SIZES}


def test_pointwise_strided_conv_equals_conv2d_with_its_gradients():
    import keras
    import tensorflow as tf

    x = tf.constant(np.random.default_rng(0).normal(size=(2, 9, 8, 3)), tf.float32)
    for padding in ("valid", "same"):
        ours = PointwiseConv2D(5, 1, strides=2, padding=padding, use_bias=False)
        ref = keras.layers.Conv2D(5, 1, strides=2, padding=padding, use_bias=False)
        ours.build(x.shape)
        ref.build(x.shape)
        ref.kernel.assign(ours.kernel)
        grads = []
        for layer in (ours, ref):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x)
                loss = tf.reduce_sum(y * y)
            grads.append((y, *tape.gradient(loss, [x, layer.kernel])))
        assert grads[0][0].shape == grads[1][0].shape == (2, 5, 4, 5)
        for a, b in zip(*grads):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5)
