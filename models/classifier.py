"""Linear evaluation of a frozen encoder.

``ClassificationNetwork`` = frozen encoder -> feature standardisation ->
Dense(num_classes). ``fit_linear_probe`` follows the official protocol
(luckmatters ``linear_feature_eval.py``): features of the un-augmented images
are computed once, standardised with the train statistics, and one linear layer
is trained on them with Adam (lr 3e-4) and coupled L2 weight decay 1e-3.

That mini-batch loop (``protocol="official"``) converges where it has the
published number of steps (50 epochs of batch 128 on CIFAR-10's 50,000 images:
:data:`OFFICIAL_PROBE_STEPS`). On less data it stops far from the optimum of its
own objective (at the quick start's 512 images x 10 epochs: 40 steps, at chance),
so ``protocol="auto"`` (the default) runs it only from that many steps and else
``full_batch``: the same objective (cross-entropy + coupled L2 on standardised
features) minimised by full-batch Adam, lr :data:`FULL_BATCH_LEARNING_RATE` decayed to 0
by a cosine over :data:`FULL_BATCH_STEPS` steps spread over the epochs (a constant
rate leaves Adam jittering around the optimum, flipping test images near the
boundary). Within 1 point of an L-BFGS solution to tolerance:
tests/models/test_probe_convergence.py.
"""

import math
import weakref

import keras
import numpy as np
from keras import ops

import backends

_FORWARD = weakref.WeakKeyDictionary()
#: Steps of the published probe: 50 epochs x ceil(50,000 / 128) batches.
OFFICIAL_PROBE_STEPS = 50 * math.ceil(50000 / 128)
#: The full-batch protocol: Adam from this learning rate, cosine-decayed to 0 over this
#: many steps in all.
FULL_BATCH_LEARNING_RATE = 0.03
FULL_BATCH_STEPS = 1000
PROTOCOLS = ("auto", "official", "full_batch")


def _inference_function(encoder):
    """One compiled inference function per encoder (the backend's ``inference``), made
    once, so that no call retraces it."""
    if encoder not in _FORWARD:
        _FORWARD[encoder] = backends.get().inference(encoder)
    return _FORWARD[encoder]


@keras.saving.register_keras_serializable(package="nc_ssl")
class ClassificationNetwork(keras.Model):
    """Frozen encoder + standardisation + linear probe, runnable on images.

    Args:
        encoder: a Keras model mapping images to pooled features; frozen here.
        num_classes: number of output logits.
        feature_mean, feature_variance: per-feature standardisation statistics
            (from the train features); identity when omitted.
        weight_decay: coupled L2 coefficient of the linear layer (torch-Adam
            ``weight_decay`` semantics: ``wd * w`` added to the gradient).
    """

    def __init__(self, encoder, num_classes, feature_mean=None, feature_variance=None,
                 weight_decay=0.0, **kwargs):
        kwargs.setdefault("name", "classification_network")
        super().__init__(**kwargs)
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2. Received: num_classes={num_classes!r}")
        self.encoder = encoder
        self.encoder.trainable = False
        self.num_classes = int(num_classes)
        self.weight_decay = float(weight_decay)
        dim = encoder.output.shape[-1]
        mean = np.zeros(dim, np.float32) if feature_mean is None else np.asarray(feature_mean)
        var = np.ones(dim, np.float32) if feature_variance is None else np.asarray(
            feature_variance)
        self.standardize = keras.layers.Normalization(mean=mean.tolist(),
                                                      variance=var.tolist(),
                                                      name="standardize", dtype="float32")
        regularizer = keras.regularizers.L2(self.weight_decay / 2) if self.weight_decay else None
        self.linear = keras.layers.Dense(self.num_classes, name="linear", dtype="float32",
                                         kernel_regularizer=regularizer,
                                         bias_regularizer=regularizer)
        self.standardize.build((None, dim))
        self.linear.build((None, dim))
        self.built = True

    def head(self, features):
        """Logits from pre-computed encoder features."""
        return self.linear(self.standardize(ops.cast(features, "float32")))

    def call(self, images, training=False):
        return self.head(self.encoder(images, training=False))

    def get_config(self):
        return {
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "num_classes": self.num_classes,
            "feature_mean": np.asarray(self.standardize.mean).reshape(-1).tolist(),
            "feature_variance": np.asarray(self.standardize.variance).reshape(-1).tolist(),
            "weight_decay": self.weight_decay,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        return cls(**config)


def extract_features(encoder, dataset):
    """Runs ``encoder`` (inference mode) over a dataset of ``(images, labels)``
    batches; returns float32 features and int labels as NumPy arrays."""
    features, labels = [], []
    forward = _inference_function(encoder)
    for images, y in dataset:
        features.append(np.asarray(ops.convert_to_numpy(forward(images))))
        labels.append(np.asarray(y))
    if not features:
        raise ValueError("extract_features received an empty dataset.")
    return np.concatenate(features), np.concatenate(labels).astype(np.int64)


def topk_accuracy(logits, labels, k):
    """Fraction of rows whose label is among the ``k`` largest logits."""
    k = min(k, logits.shape[-1])
    topk = np.argsort(-logits, axis=-1)[:, :k]
    return float(np.mean(np.any(topk == np.asarray(labels)[:, None], axis=-1)))


def shuffled_batches(x, y, batch_size, seed):
    """The probe's ``(features, labels)`` batches of one epoch: NumPy's seeded
    permutation (``default_rng(seed)``), the last batch partial. The same batches on
    every backend."""
    order = np.random.default_rng(seed).permutation(len(x))
    for start in range(0, len(x), batch_size):
        index = order[start:start + batch_size]
        yield x[index], y[index]


def _probe_loss(network, features, labels):
    """Mean cross-entropy and logits of the probe's head; the L2 term is added by
    the caller (``network.linear.losses``)."""
    logits = network.head(features)
    loss = ops.mean(keras.losses.sparse_categorical_crossentropy(labels, logits,
                                                                 from_logits=True))
    return loss, logits


def probe_protocol(protocol, num_train, epochs, batch_size):
    """The protocol ``auto`` resolves to (``official`` from :data:`OFFICIAL_PROBE_STEPS`
    mini-batch steps, else ``full_batch``); ``official``/``full_batch`` unchanged."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"Unknown probe protocol {protocol!r}. Valid: {list(PROTOCOLS)}")
    if protocol != "auto":
        return protocol
    steps = epochs * math.ceil(num_train / batch_size)
    return "official" if steps >= OFFICIAL_PROBE_STEPS else "full_batch"


def fit_linear_probe(encoder, train_data, test_data, num_classes, *, epochs=50,
                     learning_rate=3e-4, weight_decay=1e-3, batch_size=128, seed=0,
                     verbose=0, protocol="official"):
    """Fits the linear probe on cached features of a frozen encoder.

    Args:
        train_data, test_data: datasets of ``(eval-transformed images, labels)``
            batches, or ``(features, labels)`` NumPy pairs already extracted.

        protocol: ``official`` (mini-batch Adam at ``learning_rate``, ``batch_size``),
            ``full_batch`` (see the module docstring; ``learning_rate`` and
            ``batch_size`` unused) or ``auto`` (:func:`probe_protocol`).

    Returns ``(ClassificationNetwork, history)`` where history holds per-epoch
    ``probe_loss``, ``probe_train_top1``, ``probe_test_top1``, ``probe_test_top5``,
    the final ``top1``/``top5`` on the test split and the ``protocol`` that ran.
    ``best_test_top1_epoch`` is selected on the test split and is reported only as
    such.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1. Received: epochs={epochs!r}")
    x_train, y_train = (train_data if isinstance(train_data, tuple)
                        else extract_features(encoder, train_data))
    x_test, y_test = (test_data if isinstance(test_data, tuple)
                      else extract_features(encoder, test_data))
    mean = x_train.mean(axis=0)
    variance = x_train.var(axis=0) + 1e-6  # constant features would divide by zero
    keras.utils.set_random_seed(seed)
    network = ClassificationNetwork(encoder, num_classes, feature_mean=mean,
                                    feature_variance=variance, weight_decay=weight_decay)
    protocol = probe_protocol(protocol, len(x_train), epochs, batch_size)
    if protocol == "full_batch":
        repeats = math.ceil(FULL_BATCH_STEPS / epochs)
        learning_rate = FULL_BATCH_LEARNING_RATE
        schedule = keras.optimizers.schedules.CosineDecay(learning_rate, repeats * epochs)

        def train_epoch(seed):
            del seed
            return ((x_train, y_train) for _ in range(repeats))
    else:
        def train_epoch(seed):
            return shuffled_batches(x_train, y_train, batch_size, seed)
    if verbose:
        print(f"probe: {_describe(protocol, epochs, learning_rate, weight_decay, batch_size)}",
              flush=True)
    optimizer = keras.optimizers.Adam(schedule if protocol == "full_batch" else learning_rate)
    optimizer.build(network.linear.trainable_variables)
    step, predict = backends.get().probe_functions(network, optimizer, _probe_loss)
    history = {"probe_loss": [], "probe_train_top1": [], "probe_test_top1": [],
               "probe_test_top5": []}
    for epoch in range(epochs):
        losses, correct, seen = [], 0, 0
        for features, labels in train_epoch(seed + epoch):
            loss, logits = step(features, labels)
            losses.append(float(loss))
            correct += int(np.sum(np.argmax(ops.convert_to_numpy(logits), -1) == labels))
            seen += int(labels.shape[0])
        test_logits = np.concatenate([ops.convert_to_numpy(predict(x_test[i:i + 1024]))
                                      for i in range(0, len(x_test), 1024)])
        history["probe_loss"].append(float(np.mean(losses)))
        history["probe_train_top1"].append(correct / max(seen, 1))
        history["probe_test_top1"].append(topk_accuracy(test_logits, y_test, 1))
        history["probe_test_top5"].append(topk_accuracy(test_logits, y_test, 5))
        if verbose:
            print(f"probe epoch {epoch + 1}/{epochs}: loss {history['probe_loss'][-1]:.4f} "
                  f"train top-1 {history['probe_train_top1'][-1]:.4f} "
                  f"test top-1 {history['probe_test_top1'][-1]:.4f}", flush=True)
    history["protocol"] = protocol
    history["top1"] = history["probe_test_top1"][-1]
    history["top5"] = history["probe_test_top5"][-1]
    best = int(np.argmax(history["probe_test_top1"]))
    history["best_test_top1_epoch"] = best + 1  # test-selected: not a clean estimate
    history["best_test_top1"] = history["probe_test_top1"][best]
    return network, history


def _describe(protocol, epochs, learning_rate, weight_decay, batch_size):
    if protocol == "full_batch":
        steps = math.ceil(FULL_BATCH_STEPS / epochs) * epochs
        return (f"full-batch Adam lr {learning_rate:g} (cosine to 0), "
                f"weight decay {weight_decay:g}, {steps} steps over {epochs} epochs "
                f"(the official mini-batch loop would be too short to converge here)")
    return (f"official protocol: Adam lr {learning_rate:g}, weight decay {weight_decay:g}, "
            f"batch {batch_size}, {epochs} epochs")
