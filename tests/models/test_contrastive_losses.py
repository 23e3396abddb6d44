import threading

import numpy as np
import pytest
import tensorflow as tf

from models.contrastive_losses import (barlow_twins, info_nce, moco_symmetric_loss,
                                       nt_xent, sinkhorn, supcon, swav_loss)


# ----------------------------------------------------------------------------- NumPy references


def normalize(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def logsumexp(x):
    m = np.max(x)
    return m + np.log(np.sum(np.exp(x - m)))


def log_softmax(x):
    return x - np.array([[logsumexp(row)] for row in x])


def np_nt_xent(z1, z2, t):
    z = normalize(np.concatenate([z1, z2]))
    m = len(z)
    total = 0.0
    for i in range(m):
        sims = z @ z[i] / t
        others = [k for k in range(m) if k != i]
        total -= sims[(i + m // 2) % m] - logsumexp(sims[others])
    return total / m


def np_supcon(z1, z2, labels, t):
    z = normalize(np.concatenate([z1, z2]))
    y = np.concatenate([labels, labels])
    m = len(z)
    total = 0.0
    for i in range(m):
        sims = z @ z[i] / t
        others = [k for k in range(m) if k != i]
        denominator = logsumexp(sims[others])
        positives = [p for p in others if y[p] == y[i]]
        total -= np.mean([sims[p] - denominator for p in positives])
    return total / m


def np_sinkhorn(scores, eps, iterations):
    """The official SwAV algorithm in its K x B layout."""
    q = np.exp(np.asarray(scores, np.float64) / eps).T
    k, b = q.shape
    q /= q.sum()
    for _ in range(iterations):
        q /= q.sum(axis=1, keepdims=True)
        q /= k
        q /= q.sum(axis=0, keepdims=True)
        q /= b
    return (q * b).T


def np_swav(s1, s2, t, eps, iterations, queue1=None, queue2=None):
    def codes(s, queue):
        if queue is None:
            return np_sinkhorn(s, eps, iterations)
        return np_sinkhorn(np.concatenate([queue, s]), eps, iterations)[len(queue):]

    q1, q2 = codes(s1, queue1), codes(s2, queue2)
    l12 = -np.mean(np.sum(q2 * log_softmax(np.asarray(s1, np.float64) / t), axis=1))
    l21 = -np.mean(np.sum(q1 * log_softmax(np.asarray(s2, np.float64) / t), axis=1))
    return (l12 + l21) / 2


def np_info_nce(q, k, queue, t):
    q, k, queue = normalize(q), normalize(k), normalize(queue)
    total = 0.0
    for i in range(len(q)):
        logits = np.concatenate([[q[i] @ k[i]], queue @ q[i]]) / t
        total -= logits[0] - logsumexp(logits)
    return total / len(q)


def np_barlow(z1, z2, lambd, eps=1e-5):
    def standardise(z):
        z = np.asarray(z, np.float64)
        return (z - z.mean(0)) / np.sqrt(z.var(0) + eps)  # biased variance

    c = standardise(z1).T @ standardise(z2) / len(z1)
    loss = 0.0
    for i in range(c.shape[0]):
        for j in range(c.shape[1]):
            loss += (1 - c[i, i]) ** 2 if i == j else lambd * c[i, j] ** 2
    return loss


def random(rng, *shape):
    return rng.normal(size=shape).astype("float32")


# ----------------------------------------------------------------------------- NT-Xent / SupCon


@pytest.mark.parametrize("t", [0.1, 0.5, 1.0])
def test_nt_xent_matches_numpy(t):
    rng = np.random.default_rng(0)
    z1, z2 = random(rng, 6, 5), random(rng, 6, 5)
    assert float(nt_xent(z1, z2, temperature=t)) == pytest.approx(np_nt_xent(z1, z2, t),
                                                                   rel=1e-5)


@pytest.mark.parametrize("t", [0.2, 0.5])
def test_nt_xent_orthogonal_embeddings_closed_form(t):
    n = 4
    z1 = np.eye(n, dtype="float32") * np.arange(1, n + 1, dtype="float32")[:, None]
    z2 = 3.0 * np.eye(n, dtype="float32")
    # Positive similarity 1, the other 2n - 2 similarities 0.
    expected = np.log(1 + (2 * n - 2) * np.exp(-1 / t))
    assert float(nt_xent(z1, z2, temperature=t)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("t", [0.07, 0.1, 0.5])
def test_supcon_matches_numpy(t):
    rng = np.random.default_rng(1)
    z1, z2 = random(rng, 8, 5), random(rng, 8, 5)
    labels = np.array([0, 1, 0, 2, 1, 1, 3, 0])
    expected = np_supcon(z1, z2, labels, t)
    assert float(supcon(z1, z2, labels, temperature=t)) == pytest.approx(expected, rel=1e-5)
    scaled = supcon(z1, z2, labels, temperature=t, base_temperature=0.07)
    assert float(scaled) == pytest.approx(expected * t / 0.07, rel=1e-5)
    one_hot = np.eye(4, dtype="float32")[labels]
    assert float(supcon(z1, z2, one_hot, temperature=t)) == pytest.approx(expected, rel=1e-5)
    column = labels[:, None].astype("int64")
    assert float(supcon(z1, z2, column, temperature=t)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("t", [0.1, 0.5])
def test_supcon_with_distinct_labels_equals_nt_xent(t):
    rng = np.random.default_rng(2)
    z1, z2 = random(rng, 5, 4), random(rng, 5, 4)
    labels = np.array([4, 0, 3, 1, 2])
    assert float(supcon(z1, z2, labels, temperature=t)) == pytest.approx(
        float(nt_xent(z1, z2, temperature=t)), rel=1e-6)


# ----------------------------------------------------------------------------- SwAV


@pytest.mark.parametrize("eps", [0.05, 0.1, 0.5])
def test_sinkhorn_matches_the_official_algorithm(eps):
    rng = np.random.default_rng(3)
    scores = normalize(random(rng, 12, 6)) @ normalize(random(rng, 5, 6)).T
    q = sinkhorn(scores.astype("float32"), epsilon=eps, iterations=3)
    assert q.dtype == tf.float32
    np.testing.assert_allclose(q.numpy(), np_sinkhorn(scores, eps, 3), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(q.numpy().sum(axis=1), 1.0, rtol=1e-5)


def test_sinkhorn_equipartitions_the_prototypes():
    rng = np.random.default_rng(4)
    b, k = 12, 4
    scores = normalize(random(rng, b, 6)) @ normalize(random(rng, k, 6)).T
    q = sinkhorn(scores.astype("float32"), epsilon=0.1, iterations=300).numpy()
    np.testing.assert_allclose(q.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(q.sum(axis=0), b / k, rtol=1e-4)
    # Three iterations are not yet equipartitioned, but rows already sum to one.
    q3 = sinkhorn(scores.astype("float32"), epsilon=0.1, iterations=3).numpy()
    np.testing.assert_allclose(q3.sum(axis=1), 1.0, rtol=1e-5)


def test_sinkhorn_weights_drop_and_duplicate_rows():
    rng = np.random.default_rng(5)
    scores = random(rng, 7, 5) * 0.3
    reference = np_sinkhorn(scores[2:], 0.05, 3)
    dropped = sinkhorn(scores, iterations=3, weights=[0, 0, 1, 1, 1, 1, 1]).numpy()
    np.testing.assert_allclose(dropped[:2], 0.0)
    np.testing.assert_allclose(dropped[2:], reference, rtol=1e-4, atol=1e-6)
    # A row given twice with weight 1/2 each counts as the row once.
    doubled = np.concatenate([scores[2:3], scores[2:]])
    halves = sinkhorn(doubled, iterations=3, weights=[0.5, 0.5, 1, 1, 1, 1]).numpy()
    np.testing.assert_allclose(halves[2:], reference[1:], rtol=1e-4, atol=1e-6)


def test_sinkhorn_does_not_overflow_for_large_scores():
    scores = np.array([[10.0, 9.0], [9.0, 10.0]], "float32")  # exp(10 / 0.05) overflows
    q = sinkhorn(scores, epsilon=0.05).numpy()
    np.testing.assert_allclose(q, [[1, 0], [0, 1]], atol=1e-6)


@pytest.mark.parametrize("t,eps", [(0.1, 0.05), (0.5, 0.1)])
def test_swav_loss_matches_numpy(t, eps):
    rng = np.random.default_rng(6)
    protos = normalize(random(rng, 5, 6))
    s1, s2 = (normalize(random(rng, 8, 6)) @ protos.T for _ in range(2))
    queue1, queue2 = (normalize(random(rng, 10, 6)) @ protos.T for _ in range(2))
    s1, s2, queue1, queue2 = (a.astype("float32") for a in (s1, s2, queue1, queue2))
    loss = swav_loss(s1, s2, temperature=t, epsilon=eps)
    assert float(loss) == pytest.approx(np_swav(s1, s2, t, eps, 3), rel=1e-5)
    with_queue = swav_loss(s1, s2, temperature=t, epsilon=eps, queue_scores1=queue1,
                           queue_scores2=queue2)
    assert float(with_queue) == pytest.approx(np_swav(s1, s2, t, eps, 3, queue1, queue2),
                                              rel=1e-5)
    # (scores, weight) pairs: weight 1 is the plain queue, weight 0 no queue.
    on = swav_loss(s1, s2, temperature=t, epsilon=eps, queue_scores1=(queue1, 1.0),
                   queue_scores2=(queue2, tf.constant(1.0)))
    off = swav_loss(s1, s2, temperature=t, epsilon=eps, queue_scores1=(queue1, 0.0),
                    queue_scores2=(queue2, tf.constant(0.0)))
    assert float(on) == pytest.approx(float(with_queue), rel=1e-6)
    assert float(off) == pytest.approx(float(loss), rel=1e-5)


def test_swav_gradient_treats_codes_as_constants():
    rng = np.random.default_rng(7)
    s1 = tf.Variable(random(rng, 6, 4))
    s2 = tf.Variable(random(rng, 6, 4))
    t = 0.1
    with tf.GradientTape() as tape:
        loss = swav_loss(s1, s2, temperature=t)
    g1, g2 = tape.gradient(loss, [s1, s2])
    q1, q2 = (np_sinkhorn(s.numpy(), 0.05, 3) for s in (s1, s2))

    def softmax(x):
        return np.exp(log_softmax(np.asarray(x, np.float64) / t))

    b = 6
    np.testing.assert_allclose(g1.numpy(), (softmax(s1.numpy()) - q2) / (2 * t * b),
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(g2.numpy(), (softmax(s2.numpy()) - q1) / (2 * t * b),
                               rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- MoCo


@pytest.mark.parametrize("t", [0.07, 0.2, 1.0])
def test_info_nce_matches_numpy(t):
    rng = np.random.default_rng(8)
    q, k, queue = random(rng, 5, 6), random(rng, 5, 6), random(rng, 9, 6)
    assert float(info_nce(q, k, queue, temperature=t)) == pytest.approx(
        np_info_nce(q, k, queue, t), rel=1e-5)


@pytest.mark.parametrize("t", [0.2, 0.5])
def test_info_nce_query_equal_key_orthogonal_queue(t):
    d, b, k = 8, 3, 5
    eye = np.eye(d, dtype="float32")
    query = 2.0 * eye[:b]
    queue = 0.5 * eye[b:b + k]
    expected = np.log(1 + k * np.exp(-1 / t))
    assert float(info_nce(query, query, queue, temperature=t)) == pytest.approx(expected,
                                                                                 rel=1e-5)


def test_info_nce_key_and_queue_get_no_gradient():
    rng = np.random.default_rng(9)
    q, k, queue = (tf.Variable(random(rng, *s)) for s in [(4, 3), (4, 3), (6, 3)])
    with tf.GradientTape() as tape:
        loss = info_nce(q, k, queue)
    gq, gk, gqueue = tape.gradient(loss, [q, k, queue])
    assert gk is None and gqueue is None
    assert gq is not None and np.all(np.isfinite(gq.numpy())) and np.any(gq.numpy() != 0)


def test_moco_symmetric_loss_is_the_unhalved_sum():
    rng = np.random.default_rng(10)
    q1, q2, k1, k2 = (random(rng, 4, 6) for _ in range(4))
    queue = random(rng, 7, 6)
    expected = np_info_nce(q1, k2, queue, 0.2) + np_info_nce(q2, k1, queue, 0.2)
    assert float(moco_symmetric_loss(q1, q2, k1, k2, queue)) == pytest.approx(expected,
                                                                               rel=1e-5)


# ----------------------------------------------------------------------------- Barlow Twins


@pytest.mark.parametrize("lambd", [5e-3, 0.1, 1.0])
def test_barlow_twins_matches_numpy(lambd):
    rng = np.random.default_rng(11)
    z1, z2 = random(rng, 10, 6) * 3 + 1, random(rng, 10, 6)
    assert float(barlow_twins(z1, z2, lambd=lambd)) == pytest.approx(
        np_barlow(z1, z2, lambd), rel=1e-5)


def test_barlow_twins_identical_views():
    rng = np.random.default_rng(12)
    z = random(rng, 16, 5)
    var = z.astype(np.float64).var(0)
    # C_ij = corr_ij * sqrt(var_i var_j / ((var_i + eps)(var_j + eps))).
    shrink = np.sqrt(var / (var + 1e-5))
    c = np.corrcoef(z.T) * np.outer(shrink, shrink)
    off = np.sum(c ** 2) - np.sum(np.diag(c) ** 2)
    on = np.sum((1 - shrink ** 2) ** 2)
    assert on < 1e-8  # (eps / var)^2 per feature
    assert float(barlow_twins(z, z, lambd=1.0)) == pytest.approx(on + off, rel=1e-5)
    assert float(barlow_twins(z, z, lambd=0.0)) == pytest.approx(0.0, abs=1e-8)


def test_barlow_twins_is_zero_for_identity_correlation():
    # Columns of a Hadamard matrix: mean 0, biased variance 1, mutually orthogonal.
    h = np.array([[1.0]])
    for _ in range(3):
        h = np.block([[h, h], [h, -h]])
    z = h[:, 1:].astype("float32")  # [8, 7]
    assert float(barlow_twins(z, 2 * z + 3, lambd=0.5)) == pytest.approx(0.0, abs=1e-8)


# ----------------------------------------------------------------------------- dtypes


def _all_losses(a, b, c, d, labels):
    return {
        "nt_xent": nt_xent(a, b),
        "supcon": supcon(a, b, labels),
        "swav": swav_loss(a, b),
        "sinkhorn": tf.reduce_sum(sinkhorn(a)[0] * tf.range(8, dtype=tf.float32)),
        "info_nce": info_nce(a, b, c),
        "barlow": barlow_twins(a, d),
    }


@pytest.mark.parametrize("dtype", [tf.bfloat16, tf.float16])
def test_losses_are_float32_for_low_precision_inputs(dtype):
    rng = np.random.default_rng(13)
    arrays = [normalize(random(rng, 6, 8)).astype("float32") for _ in range(4)]
    labels = np.array([0, 1, 0, 2, 1, 2])
    low = [tf.cast(a, dtype) for a in arrays]
    rounded = [tf.cast(a, tf.float32) for a in low]
    results = _all_losses(*low, labels)
    expected = _all_losses(*rounded, labels)
    full = _all_losses(*arrays, labels)
    for name, value in results.items():
        assert value.dtype == tf.float32, name
        assert float(value) == pytest.approx(float(expected[name]), rel=1e-5), name
        assert float(value) == pytest.approx(float(full[name]), rel=0.1, abs=0.05), name


# ----------------------------------------------------------------------------- distribution hooks


class FakeReplicas:
    """Runs ``fn(replica_id, all_gather, all_reduce_sum)`` on one thread per
    replica, in lock-step at every collective, like a synchronous strategy."""

    def __init__(self, num_replicas):
        self.num = num_replicas
        self.barrier = threading.Barrier(num_replicas, timeout=60)
        self.slots = [None] * num_replicas

    def _collective(self, replica, x, combine):
        self.slots[replica] = tf.convert_to_tensor(x)
        self.barrier.wait()
        result = combine(list(self.slots))
        self.barrier.wait()
        return result

    def run(self, fn):
        results, errors = [None] * self.num, []

        def worker(r):
            try:
                results[r] = fn(
                    r,
                    lambda x: self._collective(r, x, lambda xs: tf.concat(xs, axis=0)),
                    lambda x: self._collective(r, x, tf.add_n))
            except BaseException as error:  # release the other threads
                errors.append(error)
                self.barrier.abort()

        threads = [threading.Thread(target=worker, args=(r,)) for r in range(self.num)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return results


def _split(x, replicas=2):
    return np.split(np.asarray(x), replicas)


def test_nt_xent_and_supcon_gathered_over_replicas_equal_the_whole_batch():
    rng = np.random.default_rng(14)
    z1, z2 = random(rng, 8, 5), random(rng, 8, 5)
    labels = np.array([0, 1, 2, 0, 1, 1, 3, 2])
    parts1, parts2, part_labels = _split(z1), _split(z2), _split(labels)

    def step(r, all_gather, all_reduce_sum):
        offset = r * len(parts1[r])
        return (nt_xent(parts1[r], parts2[r], temperature=0.3, all_gather=all_gather,
                        replica_offset=offset),
                supcon(parts1[r], parts2[r], part_labels[r], temperature=0.3,
                       all_gather=all_gather, replica_offset=tf.constant(offset)))

    per_replica = FakeReplicas(2).run(step)
    assert np.mean([float(a) for a, _ in per_replica]) == pytest.approx(
        float(nt_xent(z1, z2, temperature=0.3)), rel=1e-5)
    assert np.mean([float(b) for _, b in per_replica]) == pytest.approx(
        float(supcon(z1, z2, labels, temperature=0.3)), rel=1e-5)
    # Without the offset the positives would be wrong.
    assert float(per_replica[1][0]) != pytest.approx(float(nt_xent(
        parts1[1], parts2[1], temperature=0.3, all_gather=lambda x: x)), rel=1e-3)


def test_swav_with_all_reduced_sinkhorn_equals_the_whole_batch():
    rng = np.random.default_rng(15)
    protos = normalize(random(rng, 5, 6))
    s1, s2, queue1, queue2 = (
        (normalize(random(rng, n, 6)) @ protos.T).astype("float32") for n in (8, 8, 6, 6))
    whole = float(swav_loss(s1, s2, queue_scores1=queue1, queue_scores2=queue2))
    codes = sinkhorn(np.concatenate([queue1, s1]))[6:].numpy()

    # Per-replica queues (the official code): each replica holds half, weight 1.
    def local_queue(r, all_gather, all_reduce_sum):
        return (swav_loss(_split(s1)[r], _split(s2)[r], queue_scores1=_split(queue1)[r],
                          queue_scores2=_split(queue2)[r], all_reduce_sum=all_reduce_sum),
                sinkhorn(np.concatenate([_split(queue1)[r], _split(s1)[r]]),
                         all_reduce_sum=all_reduce_sum)[3:])

    results = FakeReplicas(2).run(local_queue)
    assert np.mean([float(loss) for loss, _ in results]) == pytest.approx(whole, rel=1e-5)
    np.testing.assert_allclose(np.concatenate([q.numpy() for _, q in results]), codes,
                               rtol=1e-4, atol=1e-6)

    # A gathered queue replicated on both replicas counts once with weight 1/2.
    def shared_queue(r, all_gather, all_reduce_sum):
        return swav_loss(_split(s1)[r], _split(s2)[r], queue_scores1=(queue1, 0.5),
                         queue_scores2=(queue2, 0.5), all_reduce_sum=all_reduce_sum)

    losses = FakeReplicas(2).run(shared_queue)
    assert np.mean([float(loss) for loss in losses]) == pytest.approx(whole, rel=1e-5)

    # Without the reduction each replica would equipartition its own half only.
    local_only = np.mean([float(swav_loss(_split(s1)[r], _split(s2)[r])) for r in range(2)])
    assert local_only != pytest.approx(float(swav_loss(s1, s2)), rel=1e-4)


def test_barlow_twins_with_all_reduced_statistics_equals_the_whole_batch():
    rng = np.random.default_rng(16)
    z1, z2 = random(rng, 12, 5) * 2 + 1, random(rng, 12, 5)
    whole = float(barlow_twins(z1, z2, lambd=0.1))

    def step(r, all_gather, all_reduce_sum):
        return (barlow_twins(_split(z1)[r], _split(z2)[r], lambd=0.1,
                             all_reduce_sum=all_reduce_sum),
                barlow_twins(_split(z1)[r], _split(z2)[r], lambd=0.1,
                             all_reduce_sum=all_reduce_sum, batch_size=12))

    results = FakeReplicas(2).run(step)
    for counted, given in results:  # every replica returns the global loss
        assert float(counted) == pytest.approx(whole, rel=1e-5)
        assert float(given) == pytest.approx(whole, rel=1e-5)
