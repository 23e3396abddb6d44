"""The linear probe converges at every scale (issue 29): within 1 point of a
multinomial logistic regression of the same objective (cross-entropy + coupled
L2 on standardised features) solved to tolerance by SciPy's L-BFGS, an
independent reference; and the published protocol runs at the published size."""

import numpy as np
import pytest
import scipy.optimize

from models import classifier


def class_features(num_train, num_test, dim=32, classes=10, seed=0):
    """Linearly mixed, offset Gaussian classes: standardisation matters."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(classes, dim)) * 0.35
    mix = rng.normal(size=(dim, dim)) * 2 / np.sqrt(dim)
    offset = 3 * rng.normal(size=dim)

    def draw(n):
        y = rng.integers(0, classes, n)
        return ((means[y] + rng.normal(size=(n, dim))) @ mix + offset).astype("float32"), y

    return draw(num_train), draw(num_test)


def reference_top1(train, test, classes, weight_decay):
    """Test top-1 of argmin CE + wd/2 (|W|^2 + |b|^2) on train-standardised features."""
    (x, y), (xt, yt) = train, test
    mean, std = x.mean(0), np.sqrt(x.var(0) + 1e-6)
    a, at = (x - mean) / std, (xt - mean) / std
    n, d = a.shape
    onehot = np.eye(classes)[y]

    def objective(p):
        w, b = p[:d * classes].reshape(d, classes), p[d * classes:]
        z = a @ w + b
        z = z - z.max(1, keepdims=True)
        lse = np.log(np.exp(z).sum(1))
        prob = np.exp(z - lse[:, None])
        loss = np.mean(lse - (z * onehot).sum(1)) + weight_decay / 2 * (p @ p)
        g = (prob - onehot) / n
        return loss, np.concatenate([(a.T @ g).ravel(), g.sum(0)]) + weight_decay * p

    result = scipy.optimize.minimize(objective, np.zeros(d * classes + classes), jac=True,
                                     method="L-BFGS-B",
                                     options=dict(maxiter=10000, gtol=1e-9, ftol=1e-15))
    assert result.success, result.message
    w, b = result.x[:d * classes].reshape(d, classes), result.x[d * classes:]
    return float(np.mean(np.argmax(at @ w + b, 1) == yt))


def identity_encoder(dim):
    import keras
    inputs = keras.Input((dim,))
    return keras.Model(inputs, keras.layers.Identity()(inputs))


@pytest.mark.parametrize("num_train,epochs", [(512, 10), (10000, 100)],
                         ids=["quick_start", "scaled_down_cifar10"])
def test_default_probe_is_within_one_point_of_lbfgs(num_train, epochs):
    train, test = class_features(num_train, 1000)
    expected = reference_top1(train, test, 10, 1e-3)
    _, history = classifier.fit_linear_probe(identity_encoder(32), train, test, 10,
                                             epochs=epochs, protocol="auto")
    assert history["protocol"] == "full_batch"
    assert len(history["probe_test_top1"]) == epochs
    assert expected > 0.3  # learnable, far above chance
    assert abs(history["top1"] - expected) <= 0.01, (history["top1"], expected)


def test_official_loop_at_small_scale_is_what_auto_avoids():
    train, test = class_features(512, 1000)
    _, history = classifier.fit_linear_probe(identity_encoder(32), train, test, 10,
                                             epochs=10, protocol="official")
    assert history["protocol"] == "official"
    assert history["top1"] < reference_top1(train, test, 10, 1e-3) - 0.1


def test_auto_runs_the_published_protocol_at_the_published_size():
    assert classifier.OFFICIAL_PROBE_STEPS == 50 * 391
    assert classifier.probe_protocol("auto", 50000, 50, 128) == "official"
    assert classifier.probe_protocol("auto", 50000, 49, 128) == "full_batch"
    assert classifier.probe_protocol("auto", 512, 10, 128) == "full_batch"
    assert classifier.probe_protocol("official", 512, 10, 128) == "official"
    with pytest.raises(ValueError, match="Received|Valid"):
        classifier.probe_protocol("lbfgs", 512, 10, 128)
