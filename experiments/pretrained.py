"""A run's pre-trained encoder as a stand-alone Keras model, and its export for serving.

    from experiments import load_encoder
    encoder = load_encoder("results/NAME")        # frozen, inference-mode BatchNorm
    features = encoder(images)                    # [B, S, S, 3], 0..255 (uint8 or float)

The model maps raw images on the 0..255 scale (uint8 or float; any batch; the run's image
size ``S``) to the pooled features of the online encoder. The run's normalisation is inside
it (``x / 255``, then ``(x - mean) / std`` with the run's ``normalize_mean`` /
``normalize_std``), so it equals the package's evaluation view
(``data_processing.augment_ops.eval_transform``) followed by the encoder. Images of another
size are resized and centre-cropped by the caller (``eval_transform`` does so), or the
encoder is rebuilt for them with ``image_size=`` (convolutional encoders with global
pooling take any size their strides allow).

``export_encoder(run_dir, path)`` writes it as a TensorFlow SavedModel (``model.export``,
serving signature ``serve``: float32 ``[None, S, S, 3]`` -> float32 features), loadable
with ``tf.saved_model.load`` without this package.
"""

import os

import keras

from experiments.run_folder import RunDirectory, read_run

#: Run statuses after which ``encoder.keras`` holds the final pre-trained weights.
FINISHED = ("pretrained", "complete")


def _check_backend():
    import backends
    backends.get()  # a one-line ValueError outside TensorFlow and JAX


def _saved_encoder(run_dir, config):
    """The saved online encoder of a run whose pre-training has finished."""
    info, _ = read_run(run_dir)
    run = RunDirectory.from_path(run_dir)
    if info["status"] not in FINISHED or not os.path.isfile(run.encoder_model):
        raise ValueError(f"{run_dir!r} has not finished pre-training (run status: "
                         f"{info['status']}); finish it with train.py --resume. "
                         f"Received: {run_dir!r}")
    import models  # noqa: F401  registers the package's layers for load_model
    return keras.models.load_model(run.encoder_model, compile=False)


def encoder_at_size(encoder, config, image_size, run_dir=""):
    """``encoder`` rebuilt for ``image_size`` x ``image_size`` images with its weights
    (itself when that is the run's size). ``ValueError`` when the backbone cannot take
    that size (a layer's output would be empty, or the weights depend on the size)."""
    image_size = int(image_size)
    if image_size == config.image_size:
        return encoder
    from models import build_encoder
    reason = None
    try:
        rebuilt = build_encoder(config.replace(image_size=image_size), name=encoder.name)
        rebuilt.set_weights(encoder.get_weights())
    except ValueError as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    if reason is None and any(d is not None and d < 1 for d in rebuilt.output.shape[1:]):
        reason = f"its features would have shape {tuple(rebuilt.output.shape)}"
    if reason is not None:
        raise ValueError(f"The encoder of {run_dir or 'the run'} ({config.backbone}, trained "
                         f"on {config.image_size} px) cannot take {image_size} px images: "
                         f"{reason}. Received: image_size={image_size}")
    return rebuilt


def encoder_model(encoder, config, trainable=False):
    """``encoder`` behind the run's normalisation: a ``keras.Model`` from 0..255 images
    (uint8 or float) of the encoder's input size to float32 features. ``trainable=False``
    freezes it (BatchNorm then runs in inference mode, also inside ``fit``)."""
    shape = tuple(encoder.input.shape[1:])
    if len(shape) != 3 or shape[-1] != 3:
        raise ValueError(f"The encoder ({config.backbone}) takes inputs of shape {shape}, "
                         f"not [H, W, 3] images. Received: backbone={config.backbone!r}")
    inputs = keras.Input(shape, name="images")
    x = keras.layers.Rescaling(1.0 / 255.0, name="to_unit_range")(inputs)
    x = keras.layers.Normalization(mean=list(config.normalize_mean),
                                   variance=[s * s for s in config.normalize_std],
                                   name="normalize")(x)
    x = encoder(x)
    outputs = keras.layers.Activation("linear", dtype="float32", name="features")(x)
    model = keras.Model(inputs, outputs, name=f"{encoder.name}_with_normalization")
    encoder.trainable = bool(trainable)
    return model


def load_encoder(run_dir, *, image_size=None, trainable=False):
    """The pre-trained online encoder of the run at ``run_dir`` as a ``keras.Model``.

    Args:
        run_dir: a results folder ``RESULTS_DIR/NAME`` whose pre-training has finished.
        image_size: the input size (default: the run's); another size rebuilds the
            encoder for it (:func:`encoder_at_size`).
        trainable: ``False`` (default) freezes the encoder (a fixed feature extractor,
            BatchNorm in inference mode); ``True`` to fine-tune it.

    Inputs: ``[B, S, S, 3]`` images on the 0..255 scale, uint8 or float; the run's
    normalisation is applied inside. Outputs: float32 ``[B, D]`` pooled features.
    Raises ``ValueError`` (one line) for a folder that is not a finished run.
    """
    _check_backend()
    _, config = read_run(run_dir)
    encoder = _saved_encoder(run_dir, config)
    if image_size is not None:
        encoder = encoder_at_size(encoder, config, image_size, run_dir)
    return encoder_model(encoder, config, trainable=trainable)


def export_encoder(run_dir, path, *, image_size=None):
    """Writes :func:`load_encoder`'s model as a TensorFlow SavedModel at ``path``
    (``keras.Model.export``; serving endpoint ``serve``, float32 0..255 images in).
    TensorFlow backend only. Returns ``path``."""
    if keras.backend.backend() != "tensorflow":
        raise ValueError("export_encoder writes a TensorFlow SavedModel: run it under "
                         "KERAS_BACKEND=tensorflow. Received: "
                         f"KERAS_BACKEND={keras.backend.backend()!r}")
    model = load_encoder(run_dir, image_size=image_size)
    model.export(os.fspath(path), format="tf_saved_model", verbose=False)
    return path
