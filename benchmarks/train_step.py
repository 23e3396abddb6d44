"""Times the pre-training step of a SiameseNetwork after warm-up.

    python benchmarks/train_step.py --model directpred --batch_size 128
    python benchmarks/train_step.py --model byol --width 0.25 --mixed_precision bfloat16

Random uint8 images in memory go through the package's own two-view pipeline
(``--augment_on host``) or are augmented inside the step (``device``); prints
``images_per_s=<number>`` (images, i.e. two-view pairs, per second) as its last line.
"""

import os
import sys
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import config as config_lib  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum("model", "byol", sorted(config_lib.MODELS), "Method.")
flags.DEFINE_string("config", None, "Factory name instead of --model.")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_float("width", 1.0, "Encoder width multiplier.")
flags.DEFINE_integer("image_size", 32, "Image size.")
flags.DEFINE_enum("mixed_precision", "none", list(config_lib.MIXED_PRECISION), "Policy.")
flags.DEFINE_boolean("jit_compile", False, "XLA-compile the train step.")
flags.DEFINE_enum("augment_on", "host", list(config_lib.AUGMENT_ON), "Augmentation placement.")
flags.DEFINE_integer("warmup_steps", 3, "Untimed steps (tracing, compilation).")
flags.DEFINE_integer("steps", 10, "Timed steps.")


def main(argv):
    del argv
    import numpy as np
    import tensorflow as tf

    from data_processing.augmentations import pretraining_dataset
    from data_processing.datasets import from_arrays
    from models import SiameseNetwork, build_optimizer

    name = FLAGS.config or config_lib.MODELS[FLAGS.model]
    config = config_lib.get_config(name).replace(
        batch_size=FLAGS.batch_size, width=FLAGS.width, image_size=FLAGS.image_size,
        mixed_precision=FLAGS.mixed_precision, jit_compile=FLAGS.jit_compile,
        augment_on=FLAGS.augment_on)
    n = FLAGS.batch_size * (FLAGS.warmup_steps + FLAGS.steps)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, FLAGS.image_size, FLAGS.image_size, 3), np.uint8)
    labels = np.zeros(n, np.int64)
    data = from_arrays(images, labels, images[:1], labels[:1], ("a", "b"))
    batches = iter(pretraining_dataset(data, config, shuffle=False).cache().repeat())
    model = SiameseNetwork(config)
    model.compile(optimizer=build_optimizer(config), jit_compile=config.jit_compile)
    for _ in range(FLAGS.warmup_steps):
        model.train_on_batch(next(batches))
    start = time.perf_counter()
    for _ in range(FLAGS.steps):
        loss = model.train_on_batch(next(batches))
    np.asarray(loss)  # wait for the last step
    seconds = time.perf_counter() - start
    print(f"{name} batch {FLAGS.batch_size} width {FLAGS.width} {FLAGS.mixed_precision} "
          f"jit={FLAGS.jit_compile} augment_on={FLAGS.augment_on}: "
          f"{seconds / FLAGS.steps * 1000:.0f} ms/step")
    print(f"images_per_s={FLAGS.batch_size * FLAGS.steps / seconds:.1f}")


if __name__ == "__main__":
    app.run(main)
