"""Times the pre-training step of any method after warm-up, beside a bare reference step.

    python benchmarks/train_step.py --model directpred --batch_size 128
    python benchmarks/train_step.py --model byol --mixed_precision bfloat16 --reference
    python benchmarks/train_step.py --model simclr --jit_compile --augment_on device
    python benchmarks/train_step.py --model directpred --backend jax   # KERAS_BACKEND=jax

Random uint8 images in memory go through the package's own two-view pipeline
(``--augment_on host``) or are augmented inside the step (``device``); the batches
are cached so that the input pipeline is not timed. The package's step is
``model.train_on_batch`` (Keras trainer, metrics, weight decay and every after-step
update: EMA, F, DirectPred's eigendecomposition, queues). ``--reference`` also times
two bare ``tf.GradientTape`` steps of the same network in one ``tf.function`` each, in
alternating rounds so that all see the same machine load: the minimal one (forward,
loss, gradients, optimizer update) and one with the same updates as the package
(coupled weight decay, EMA, F, Wp, queues); and for DirectPred the eigendecomposition
of a d x d F on its own.
``--backend`` picks the Keras backend of this process (``tensorflow``, the default, or
``jax``: the jitted stateless step of ``backends/jax.py`` on the same model and
batches; ``--reference`` is TensorFlow only). One backend per process: run it twice
to compare.
The last line is ``images_per_s=<number>`` (images, i.e. two-view pairs, per second)
of the package's step (median over rounds).
"""

import os
import statistics
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
flags.DEFINE_float("width", 1.0, "Encoder width multiplier (1 = published ResNet-18).")
flags.DEFINE_integer("image_size", 32, "Image size.")
flags.DEFINE_enum("mixed_precision", "none", list(config_lib.MIXED_PRECISION), "Policy.")
flags.DEFINE_boolean("jit_compile", False, "XLA-compile the train step.")
flags.DEFINE_enum("augment_on", "host", list(config_lib.AUGMENT_ON), "Augmentation placement.")
flags.DEFINE_integer("warmup_steps", 3, "Untimed steps (tracing, compilation).")
flags.DEFINE_integer("steps", 10, "Timed steps per round.")
flags.DEFINE_integer("rounds", 1, "Timing rounds (medians are reported).")
flags.DEFINE_boolean("reference", False, "Also time a bare GradientTape step (TensorFlow).")
flags.DEFINE_enum("backend", "tensorflow", ["tensorflow", "jax"],
                  "Keras backend of this process (set before Keras is imported).")


def _timed(step, batches, steps):
    """Seconds for ``steps`` calls of ``step``, waiting for the last result."""
    import numpy as np

    start = time.perf_counter()
    for _ in range(steps):
        out = step(next(batches))
    np.asarray(out)
    return time.perf_counter() - start


def bare_step(model, same_updates=False):
    """A bare ``GradientTape`` step of ``model``'s network: forward + loss, gradients,
    optimizer update; no Keras trainer, no metrics. With ``same_updates`` it also
    does the method's own work (coupled weight decay, after-step updates: EMA, F,
    Wp, queues), i.e. the same algorithm as the package's step."""
    import tensorflow as tf

    pairs = model.trainable_with_decay()
    variables = [v for v, _ in pairs]
    optimizer = model.optimizer

    @tf.function(jit_compile=model.config.jit_compile)
    def step(data):
        x1, x2, labels = model.unpack_batch(data)
        with tf.GradientTape() as tape:
            loss, outputs = model.compute_ssl_loss(x1, x2, labels, training=True)
            scaled = optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, variables)
        if same_updates:
            grads = [g + wd * v if wd else g for g, (v, wd) in zip(grads, pairs)]
        optimizer.apply(grads, variables)
        if same_updates:
            model.after_step(outputs)
            model.step_counter.assign_add(1)
        return loss

    return step


def eigendecomposition_ms(dim, repeats=50):
    """Milliseconds of one DirectPred predictor computation (``eigh`` of a d x d F)."""
    import numpy as np
    import tensorflow as tf

    from models.predictors import direct_pred_weights

    z = np.random.default_rng(0).normal(size=(256, dim)).astype("float32")
    corr = tf.constant(z.T @ z / len(z))
    fn = tf.function(lambda f: direct_pred_weights(f, 0.1))
    fn(corr).numpy()
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn(corr)
    out.numpy()
    return (time.perf_counter() - start) / repeats * 1000


def cached_batches(config, images, labels, with_labels):
    """An endless cycle of the package's first pre-training batches (input not timed)."""
    import itertools

    if FLAGS.backend == "jax":
        from data_processing import arrays
        data = arrays.from_arrays(images, labels, images[:1], labels[:1], tuple("abcdefghij"))
        return itertools.cycle(list(arrays.pretraining_dataset(
            data, config, shuffle=False, with_labels=with_labels)))
    from data_processing.augmentations import pretraining_dataset
    from data_processing.datasets import from_arrays
    data = from_arrays(images, labels, images[:1], labels[:1], tuple("abcdefghij"))
    return iter(pretraining_dataset(data, config, shuffle=False,
                                    with_labels=with_labels).cache().repeat())


def main(argv):
    from experiments import console
    console.quiet_framework_logs()  # TensorFlow's / XLA's start-up lines, as train.py
    del argv
    if FLAGS.reference and FLAGS.backend != "tensorflow":
        raise app.UsageError("--reference times bare GradientTape steps: TensorFlow only. "
                             f"Received: --backend {FLAGS.backend}")
    existing = os.environ.get("KERAS_BACKEND")
    if existing and existing != FLAGS.backend:
        raise app.UsageError(f"KERAS_BACKEND={existing} but --backend {FLAGS.backend}")
    os.environ["KERAS_BACKEND"] = FLAGS.backend
    import numpy as np

    from models import build_model, build_optimizer

    config = config_lib.get_config(
        FLAGS.config or FLAGS.model, batch_size=FLAGS.batch_size, width=FLAGS.width,
        image_size=FLAGS.image_size, mixed_precision=FLAGS.mixed_precision, jit_compile=FLAGS.jit_compile,
        augment_on=FLAGS.augment_on)
    model = build_model(config)
    n = FLAGS.batch_size * 4
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, FLAGS.image_size, FLAGS.image_size, 3), np.uint8)
    labels = rng.integers(0, 10, n).astype(np.int64)
    batches = cached_batches(config, images, labels, model.needs_labels)
    model.compile(optimizer=build_optimizer(config, steps_per_epoch=4),
                  jit_compile=config.jit_compile)
    model.set_total_steps(1000, steps_per_epoch=4)
    package = model.train_on_batch
    references = {}
    if FLAGS.reference:
        references = {"bare GradientTape step": bare_step(model),
                      "bare GradientTape step with the same updates":
                          bare_step(model, same_updates=True)}
    for _ in range(FLAGS.warmup_steps):
        package(next(batches))
        for reference in references.values():
            reference(next(batches))
    times, ref_times = [], {name: [] for name in references}
    for _ in range(FLAGS.rounds):
        times.append(_timed(package, batches, FLAGS.steps) / FLAGS.steps)
        for label, reference in references.items():
            ref_times[label].append(_timed(reference, batches, FLAGS.steps) / FLAGS.steps)
    step_s = statistics.median(times)
    print(f"{FLAGS.backend}: {config.name} batch {FLAGS.batch_size} width {FLAGS.width} "
          f"{FLAGS.mixed_precision} "
          f"jit={FLAGS.jit_compile} augment_on={FLAGS.augment_on}: "
          f"{step_s * 1000:.0f} ms/step (rounds: "
          f"{', '.join(f'{t * 1000:.0f}' for t in times)})")
    for label, values in ref_times.items():
        ref_s = statistics.median(values)
        print(f"{label}: {ref_s * 1000:.0f} ms/step, "
              f"{FLAGS.batch_size / ref_s:.1f} images/s (rounds: "
              f"{', '.join(f'{t * 1000:.0f}' for t in values)}); "
              f"package/bare time ratio {step_s / ref_s:.3f}")
    if references:
        if config.method == "noncontrastive" and config.predictor == "directpred":
            eig = eigendecomposition_ms(config.projection_dim)
            print(f"predictor eigendecomposition ({config.projection_dim}x"
                  f"{config.projection_dim}, every {config.predictor_freq} step(s)): "
                  f"{eig:.2f} ms = {eig / config.predictor_freq / (step_s * 1000):.2%} "
                  "of the step")
    print(f"images_per_s={FLAGS.batch_size / step_s:.1f}")


if __name__ == "__main__":
    app.run(main)
