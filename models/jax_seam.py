"""The JAX seam of the models: what only JAX can do, beside the train step
(:mod:`models.jax_step`). Imported only under ``KERAS_BACKEND=jax``.

Device-side augmentation (``augment_on="device"``): the per-image uniforms of
the two views of a step are drawn from a JAX key that is a function of
(``config.seed``, step counter) only, as :func:`models.tf_seam.device_augmentation_seeds`
under TensorFlow, so a run resumed from a checkpoint (which restores the counter)
draws the views the uninterrupted run would have drawn. The recipe itself is
the backend-agnostic :func:`data_processing.augment_ops.augment_from_uniforms`.
The two backends use different random generators: the same (seed, step) gives
different views under TensorFlow and JAX, from the same distribution.
"""

import jax
import keras

from data_processing import augment_ops


def device_augmentation_uniforms(seed, step_counter, batch):
    """The uniforms ``(u1, u2)``, each float32 [batch, augment_ops.NUM_UNIFORMS], of
    the two views of step ``step_counter``: ``uniform(fold_in(fold_in(key(seed),
    step), view))``. ``seed``: a Python int (its 64 bits: the high word is folded in,
    ``jax.random.key`` alone keeps 32 without x64); ``step_counter``: an int scalar
    (traced inside the jitted step)."""
    seed = int(seed)
    key = jax.random.fold_in(jax.random.key(seed & 0xFFFFFFFF), (seed >> 32) & 0xFFFFFFFF)
    step = keras.ops.convert_to_tensor(step_counter)
    key = jax.random.fold_in(key, step.astype("uint32"))
    shape = (int(batch), augment_ops.NUM_UNIFORMS)
    return tuple(jax.random.uniform(jax.random.fold_in(key, view), shape, dtype="float32")
                 for view in (0, 1))


def device_augmented_views(images, params, seed, step_counter):
    """The two augmented views of the raw ``images`` (uint8 [B, H, W, 3]) at step
    ``step_counter``: :func:`data_processing.augment_ops.augment_from_uniforms` of
    :func:`device_augmentation_uniforms`. The JAX twin of
    :func:`models.tf_seam.device_augmented_views`."""
    images = keras.ops.convert_to_tensor(images)
    u1, u2 = device_augmentation_uniforms(seed, step_counter, images.shape[0])
    return (augment_ops.augment_from_uniforms(images, u1, params),
            augment_ops.augment_from_uniforms(images, u2, params))
