"""Times a ResNet-18 encoder training step with the shortcut's 1x1 stride-2
convolution as ``keras.layers.Conv2D`` (oneDNN's strided kernel) and as
``models.conv.PointwiseConv2D`` (slice, then a stride-1 1x1 convolution: what the
package uses since issue 29), at the sizes where the former does not crash.

    python benchmarks/pointwise_conv.py                       # the default grid
    python benchmarks/pointwise_conv.py --cases 0.25x64,1x32 --batch_size 128

Both encoders have the same weights; each step is forward, gradients and an SGD
update in one ``tf.function``; rounds alternate so both see the same machine load.
One line per case, then ``pointwise_over_conv2d=<ratio>``: the geometric mean over
the cases of the step-time ratio (below 1: the package's layer is faster).
"""

import math
import os
import statistics
import sys
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

FLAGS = flags.FLAGS
# Sizes at which the strided Conv2D does not crash (< 64 px, or width >= 0.25); from
# width 0.25 both encoders run the same kernels (>= 16 input channels).
flags.DEFINE_list("cases", ["0.0625x32", "0.0625x48", "0.125x32", "0.125x48", "0.25x64"],
                  "WIDTHxIMAGE_SIZE pairs.")
flags.DEFINE_integer("batch_size", 64, "Batch size.")
flags.DEFINE_integer("steps", 5, "Timed steps per round.")
flags.DEFINE_integer("rounds", 3, "Alternating timing rounds (medians are reported).")


def _encoders(width, size):
    """The package's encoder and a copy whose shortcuts are plain Conv2D layers."""
    import keras

    from models.backbones import resnet
    from models.conv import PointwiseConv2D

    ours = resnet("resnet18", image_size=size, width=width)

    def plain(layer):
        if isinstance(layer, PointwiseConv2D):
            return keras.layers.Conv2D.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    reference = keras.models.clone_model(ours, clone_function=plain)
    reference.set_weights(ours.get_weights())
    assert sum(isinstance(l, PointwiseConv2D) for l in reference.layers) == 0
    return ours, reference


def _step_fn(encoder):
    import tensorflow as tf

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            y = encoder(x, training=True)
            loss = tf.reduce_mean(tf.square(y))
        grads = tape.gradient(loss, encoder.trainable_variables)
        for v, g in zip(encoder.trainable_variables, grads):
            v.assign_sub(1e-3 * g)
        return loss
    return step


def main(argv):
    del argv
    import tensorflow as tf

    ratios = []
    for case in FLAGS.cases:
        width, size = case.split("x")
        width, size = float(width), int(size)
        x = tf.random.normal([FLAGS.batch_size, size, size, 3], seed=0)
        steps = [_step_fn(e) for e in _encoders(width, size)]
        for step in steps:  # trace and warm up
            step(x).numpy()
        times = [[], []]
        for _ in range(FLAGS.rounds):
            for i, step in enumerate(steps):
                start = time.perf_counter()
                for _ in range(FLAGS.steps):
                    loss = step(x)
                loss.numpy()
                times[i].append((time.perf_counter() - start) / FLAGS.steps)
        ours, plain = (statistics.median(t) for t in times)
        ratios.append(ours / plain)
        print(f"width {width:g} {size} px batch {FLAGS.batch_size}: Conv2D {plain * 1e3:.1f} "
              f"ms/step, PointwiseConv2D {ours * 1e3:.1f} ms/step (ratio {ours / plain:.3f})",
              flush=True)
    print(f"pointwise_over_conv2d={math.exp(statistics.fmean(map(math.log, ratios))):.3f}")


if __name__ == "__main__":
    app.run(main)
