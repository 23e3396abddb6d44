"""Evaluation monitor: weighted kNN accuracy of frozen features.

NumPy and ``keras.ops``: the same code under the TensorFlow and the JAX backend. The
collapse monitor (``z_std``) is :func:`models.metrics.normalized_std`.
"""

import numpy as np

__all__ = ["knn_scores", "knn_predict", "knn_accuracy"]


def _knn_inputs(train_features, train_labels, test_features, num_classes, k,
                temperature, batch_size):
    from keras import ops
    train = ops.cast(ops.convert_to_tensor(train_features), "float32")
    test = ops.cast(ops.convert_to_tensor(test_features), "float32")
    labels = np.asarray(train_labels).reshape(-1)
    if len(train.shape) != 2 or len(test.shape) != 2 or train.shape[1] != test.shape[1]:
        raise ValueError("train_features and test_features must be 2-D with the same "
                         f"feature size. Received: shapes {train.shape} and {test.shape}")
    if train.shape[0] == 0:
        raise ValueError("train_features must contain at least one example.")
    if labels.shape[0] != train.shape[0] or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError("train_labels must be integers, one per training example. "
                         f"Received: {labels.shape[0]} labels of dtype {labels.dtype} "
                         f"for {train.shape[0]} examples")
    if int(num_classes) < 1 or labels.min() < 0 or labels.max() >= int(num_classes):
        raise ValueError(f"train_labels must lie in [0, num_classes). Received: "
                         f"num_classes={num_classes!r}, labels in [{labels.min()}, {labels.max()}]")
    if int(k) < 1 or int(batch_size) < 1 or not float(temperature) > 0:
        raise ValueError("k and batch_size must be >= 1 and temperature > 0. Received: "
                         f"k={k!r}, batch_size={batch_size!r}, temperature={temperature!r}")
    return ops, train, ops.convert_to_tensor(labels.astype(np.int32)), test


def knn_scores(train_features, train_labels, test_features, num_classes, k=200,
               temperature=0.1, batch_size=1024):
    """The class votes of the weighted kNN classifier (Wu et al. 2018 InstDisc; as in
    SimCLR/solo-learn): float32 NumPy ``[num_test, num_classes]``.

    Features are cast to float32 (whatever their dtype, e.g. bfloat16) and
    l2-normalised; for each test feature the ``k`` most cosine-similar training
    features vote for their class with weight ``exp(sim / temperature)``; the
    prediction is the argmax of the summed votes. ``k`` is clipped to the
    training-set size; test features are processed in chunks of ``batch_size``.
    Eager only.

    Weights are computed as ``exp((sim - max_sim) / temperature)`` (a per-row
    constant factor), which leaves the ranking of the classes unchanged and avoids
    float32 overflow at small temperatures.
    """
    from models.ops_util import l2_normalize  # lazy: imports Keras

    ops, train, labels, test = _knn_inputs(train_features, train_labels, test_features,
                                           num_classes, k, temperature, batch_size)
    train = l2_normalize(train)
    k = min(int(k), int(train.shape[0]))
    num_classes, batch_size = int(num_classes), int(batch_size)
    scores = []
    for start in range(0, int(test.shape[0]), batch_size):
        chunk = l2_normalize(test[start:start + batch_size])
        similarity = ops.matmul(chunk, ops.transpose(train))           # [b, N]
        top_sim, top_idx = ops.top_k(similarity, k=k)                  # [b, k]
        weights = ops.exp((top_sim - top_sim[:, :1]) / float(temperature))
        votes = ops.one_hot(ops.take(labels, top_idx), num_classes, dtype="float32")
        scores.append(ops.convert_to_numpy(ops.einsum("bk,bkc->bc", weights, votes)))
    if not scores:
        return np.zeros((0, num_classes), dtype=np.float32)
    return np.concatenate(scores).astype(np.float32)


def knn_predict(train_features, train_labels, test_features, num_classes, k=200,
                temperature=0.1, batch_size=1024):
    """Weighted kNN classifier: the argmax of :func:`knn_scores`, an ``int64`` NumPy
    array of predicted labels."""
    scores = knn_scores(train_features, train_labels, test_features, num_classes, k=k,
                        temperature=temperature, batch_size=batch_size)
    return np.argmax(scores, axis=1).astype(np.int64)


def knn_accuracy(train_features, train_labels, test_features, test_labels, num_classes,
                 k=200, temperature=0.1, batch_size=1024):
    """Top-1 accuracy (float in [0, 1]) of :func:`knn_predict` on ``test_labels``."""
    test_labels = np.asarray(test_labels).reshape(-1)
    num_test = len(test_features)
    if test_labels.shape[0] != num_test or num_test == 0:
        raise ValueError("test_labels must have one label per test feature (at least one). "
                         f"Received: {test_labels.shape[0]} labels for {num_test} test features")
    predicted = knn_predict(train_features, train_labels, test_features, num_classes,
                            k=k, temperature=temperature, batch_size=batch_size)
    return float(np.mean(predicted == test_labels))
