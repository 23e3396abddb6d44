"""Contrastive, clustering and redundancy-reduction losses: pure functions of tensors.

Like :mod:`models.losses`, every loss casts its inputs to float32 (so a
``mixed_float16`` / ``mixed_bfloat16`` policy never degrades it), uses
log-softmax rather than ``log(softmax)``, and returns a float32 scalar.

Distribution hooks. The losses never look at ``tf.distribute`` themselves; the
caller passes callables that are the identity on one device:

* ``all_gather(x)``: the local ``[n, ...]`` tensor -> the global ``[N, ...]``
  batch, concatenated in replica order (``ReplicaContext.all_gather(x, 0)``).
  Used where the *negatives* must come from the global batch (NT-Xent, SupCon).
  The local anchors are compared with all global keys, and ``replica_offset`` is
  the index of this replica's first example in the gathered batch
  (``replica_id * n``); it locates each anchor's own column (masked) and its
  positive. Each replica returns the mean over its local anchors, so with equal
  per-replica batches the mean over replicas is the global loss.
* ``all_reduce_sum(x)``: the sum of ``x`` over replicas
  (``ReplicaContext.all_reduce(SUM, x)``). Used where statistics must be global
  (Sinkhorn's prototype sums and sample count, Barlow Twins' batch moments and
  cross-correlation).
"""

from keras import ops

from models.ops_util import f32 as _f32, l2_normalize

# Subtracted from masked logits (as in the SimCLR code): exp underflows to exactly 0,
# and unlike -inf, 0 * (-1e9) stays finite in masked sums.
_LARGE = 1e9


def _identity(x):
    return x


def _l2_normalize(x):
    return l2_normalize(_f32(x), axis=-1)


def _two_view_logits(z1, z2, temperature, all_gather, replica_offset):
    """Cosine logits of the 2n local anchors ``[z1; z2]`` against the 2N global
    keys ``[Z1; Z2]``, self-similarities masked. Also returns each anchor's own
    global index ``self_index`` ([2n], into 2N) and ``n_global`` (N)."""
    gather = all_gather or _identity
    z1, z2 = _l2_normalize(z1), _l2_normalize(z2)
    g1, g2 = gather(z1), gather(z2)
    anchors = ops.concatenate([z1, z2], axis=0)  # [2n, d]
    keys = ops.concatenate([g1, g2], axis=0)  # [2N, d]
    n_global = ops.shape(g1)[0]
    local = ops.arange(ops.shape(z1)[0], dtype="int32") + ops.cast(replica_offset, "int32")
    self_index = ops.concatenate([local, local + n_global], axis=0)
    logits = ops.matmul(anchors, ops.transpose(keys)) / temperature
    logits -= _LARGE * ops.one_hot(self_index, 2 * n_global, dtype="float32")
    return logits, self_index, n_global


def nt_xent(z1, z2, temperature=0.5, all_gather=None, replica_offset=0):
    """NT-Xent, SimCLR (Chen et al. 2020, Eq. 1): mean over the 2N anchors of
    ``-log softmax_{k != i}(sim(z_i, z_k) / T)`` at the other view of i.

    ``z1, z2``: [n, d] projections of the two views (row i of each from the same
    image); ``sim`` is the cosine similarity. The negatives of an anchor are the
    other 2N - 2 views of the (global) batch.

    Scale: the paper's ``L = 1/(2N) sum_k [l(2k-1, 2k) + l(2k, 2k-1)]``, i.e. the
    mean over anchors. The official TF code returns ``loss_a + loss_b`` (two batch
    means), twice this value.

    With ``all_gather`` (see the module docstring) the keys are the global batch
    and ``replica_offset`` is the index of the first local example in it.
    """
    logits, self_index, n_global = _two_view_logits(
        z1, z2, temperature, all_gather, replica_offset)
    n = ops.shape(self_index)[0] // 2
    # The positive of view-1 anchor j is view-2 key j, and vice versa.
    positive = ops.concatenate([self_index[:n] + n_global, self_index[n:] - n_global],
                               axis=0)
    log_prob = ops.log_softmax(logits, axis=-1)
    return -ops.mean(ops.take_along_axis(log_prob, positive[:, None], axis=1))


def _class_ids(labels):
    """Integer class ids [n] (as float32, exact below 2**24, so that they can be
    all-gathered like the embeddings) from ids of any shape or one-hot [n, C]."""
    labels = ops.convert_to_tensor(labels)
    if len(labels.shape) == 2 and labels.shape[-1] is not None and labels.shape[-1] > 1:
        labels = ops.argmax(labels, axis=-1)
    return ops.reshape(_f32(labels), [-1])


def supcon(z1, z2, labels, temperature=0.1, all_gather=None, replica_offset=0,
           base_temperature=None):
    """Supervised contrastive loss L^sup_out (Khosla et al. 2020, Eq. 2).

    For each of the 2N anchors i, ``-1/|P(i)| sum_{p in P(i)} log softmax_{a != i}
    (z_i . z_p / T)``, averaged over anchors, where P(i) is every other view in the
    (global) batch with the same label (the other view of i included) and the
    z are l2-normalised. ``labels``: [n] integer class ids (or [n, 1], or one-hot
    [n, C]) of the local examples, shared by both views.

    Anchors without positives cannot occur: the other view of the same image is
    always one. (Were P(i) empty, the anchor would contribute 0 and still count in
    the mean, as in the official code.) With all labels distinct, P(i) is just the
    other view and the loss equals :func:`nt_xent` at the same temperature.

    ``base_temperature``: if given, the loss is multiplied by ``T / base_temperature``
    as in the official code (where both default to 0.07, a factor 1); the paper
    has no such factor. ``all_gather`` / ``replica_offset``: as in :func:`nt_xent`;
    the labels are gathered too.
    """
    gather = all_gather or _identity
    logits, self_index, n_global = _two_view_logits(
        z1, z2, temperature, all_gather, replica_offset)
    labels = _class_ids(labels)
    anchor_labels = ops.concatenate([labels, labels], axis=0)  # [2n]
    key_labels = gather(labels)
    key_labels = ops.concatenate([key_labels, key_labels], axis=0)  # [2N]
    same = ops.cast(ops.equal(anchor_labels[:, None], key_labels[None, :]), "float32")
    positives = same * (1.0 - ops.one_hot(self_index, 2 * n_global, dtype="float32"))
    log_prob = ops.log_softmax(logits, axis=-1)  # masked self column ~ -1e9, weight 0
    mean_log_prob = ops.divide_no_nan(ops.sum(positives * log_prob, axis=-1),
                                      ops.sum(positives, axis=-1))
    loss = -ops.mean(mean_log_prob)
    if base_temperature is not None:
        loss *= temperature / base_temperature
    return loss


def sinkhorn(scores, epsilon=0.05, iterations=3, all_reduce_sum=None, weights=None):
    """Sinkhorn-Knopp codes of SwAV (Caron et al. 2020, Sec. 3.1, Eq. 3 and Alg. 1).

    ``scores``: [B, K] (z . c_k) of the samples against the K prototypes. Starting
    from ``Q = exp(scores / epsilon)``, normalised to total mass 1, each iteration
    makes every prototype's mass 1/K (sum over samples), then every sample's mass
    1/B (sum over prototypes); finally Q is multiplied by B. Returns float32 codes
    [B, K] under stop-gradient whose rows sum to 1; the columns approach B/K (the
    equipartition constraint) as the iterations grow. This is the official
    ``distributed_sinkhorn`` with the transposed (sample-major) layout.

    ``all_reduce_sum``: sums over replicas (default identity). As in the official
    code, the prototype sums, the total mass and the sample count B are global, so
    each replica returns the rows of its own samples of the global problem.

    ``weights``: optional [B] (or scalar) non-negative row multiplicities, default
    1: a row of weight w counts as w samples (its mass is w/B, B = sum of weights
    over replicas). Weight 0 drops a row (its code is 0), e.g. an empty queue; a
    queue replicated on R replicas with weight 1/R counts once globally.

    ``scores / epsilon`` is shifted by the (replica-averaged) maximum before exp,
    which the first normalisation cancels exactly, so cosine scores never overflow.
    """
    reduce_sum = all_reduce_sum or _identity
    logits = ops.stop_gradient(_f32(scores)) / epsilon
    if weights is None:
        weights = ops.ones_like(logits[:, 0])
    else:
        weights = ops.broadcast_to(ops.stop_gradient(_f32(weights)),
                                   ops.shape(logits[:, 0]))
    weights = weights[:, None]  # [B, 1]
    # One collective for the shift (mean over replicas of the local maxima, the same
    # on every replica) and the global sample count.
    stats = reduce_sum(ops.stack([ops.max(logits), ops.ones((), "float32"),
                                  ops.sum(weights)]))
    shift, total = stats[0] / stats[1], stats[2]
    num_prototypes = ops.cast(ops.shape(logits)[1], "float32")

    q = weights * ops.exp(logits - shift)
    q /= reduce_sum(ops.sum(q))
    for _ in range(iterations):
        q /= reduce_sum(ops.sum(q, axis=0, keepdims=True)) * num_prototypes
        q = ops.divide_no_nan(q, ops.sum(q, axis=1, keepdims=True)) * (weights / total)
    return ops.stop_gradient(q * total)


def _codes(scores, queue_scores, epsilon, iterations, all_reduce_sum):
    """Sinkhorn codes of the batch rows of ``[queue; batch]`` (the official order)."""
    if queue_scores is None:
        return sinkhorn(scores, epsilon, iterations, all_reduce_sum)
    weight = None
    if isinstance(queue_scores, (tuple, list)):
        queue_scores, weight = queue_scores
    queue_scores = _f32(queue_scores)
    queue_weights = ops.ones_like(queue_scores[:, 0])
    if weight is not None:
        queue_weights *= _f32(weight)
    num_queue = ops.shape(queue_scores)[0]
    q = sinkhorn(ops.concatenate([queue_scores, scores], axis=0), epsilon, iterations,
                 all_reduce_sum,
                 weights=ops.concatenate([queue_weights, ops.ones_like(scores[:, 0])],
                                         axis=0))
    return q[num_queue:]


def swav_loss(scores1, scores2, temperature=0.1, epsilon=0.05, iterations=3,
              queue_scores1=None, queue_scores2=None, all_reduce_sum=None):
    """SwAV swapped prediction (Caron et al. 2020, Eq. 1-2) for two views.

    ``scores1, scores2``: [B, K] prototype scores of the views. The codes
    ``q_v = sinkhorn(scores_v)`` (stop-gradient) are predicted from the other view:
    ``l(z_1, q_2) = -mean_b sum_k q_2 log softmax(scores1 / T)``, and the loss is
    ``(l(z_1, q_2) + l(z_2, q_1)) / 2``: the official code divides each crop's
    subloss by the number of other crops (1) and the total by the number of crops
    used for assignment (2), i.e. it averages the two terms.

    ``queue_scores_v``: optional [Q, K] scores of queued embeddings of view v
    against the current prototypes; the codes are then computed on ``[queue;
    batch]`` and sliced to the batch, as in the official code. It may also be a
    pair ``(scores, weight)`` with ``weight`` a scalar or [Q] row multiplicity
    (see :func:`sinkhorn`): 0 while the queue is not in use, and 1/R if every one
    of R replicas holds the same (gathered) queue, so that it counts once in the
    all-reduced sums; 1 for per-replica queues, as in the official code.

    ``all_reduce_sum``: passed to :func:`sinkhorn` (the official code all-reduces
    the Sinkhorn sums over GPUs, so codes are equipartitioned over the global
    batch); the cross-entropy itself is a mean over the local batch.
    """
    scores1, scores2 = _f32(scores1), _f32(scores2)
    q1 = _codes(scores1, queue_scores1, epsilon, iterations, all_reduce_sum)
    q2 = _codes(scores2, queue_scores2, epsilon, iterations, all_reduce_sum)
    loss12 = -ops.mean(ops.sum(
        q2 * ops.log_softmax(scores1 / temperature, axis=-1), axis=-1))
    loss21 = -ops.mean(ops.sum(
        q1 * ops.log_softmax(scores2 / temperature, axis=-1), axis=-1))
    return 0.5 * (loss12 + loss21)


def info_nce(query, key, queue, temperature=0.2):
    """InfoNCE of MoCo (He et al. 2020, Eq. 1; MoCo v2, Chen et al. 2020).

    ``query, key``: [B, d]; ``queue``: [K, d] negative keys (one per row). All are
    l2-normalised; key and queue are under stop-gradient. Logits ``[q.k+, q.queue^T]
    / T`` of shape [B, 1 + K], cross-entropy with the positive at index 0, mean
    over the batch.
    """
    q = _l2_normalize(query)
    k = ops.stop_gradient(_l2_normalize(key))
    negatives = ops.stop_gradient(_l2_normalize(queue))
    positive = ops.sum(q * k, axis=-1, keepdims=True)
    logits = ops.concatenate([positive, ops.matmul(q, ops.transpose(negatives))],
                             axis=-1) / temperature
    return -ops.mean(ops.log_softmax(logits, axis=-1)[:, 0])


def moco_symmetric_loss(q1, q2, k1, k2, queue, temperature=0.2):
    """Symmetrised InfoNCE ``L(q1, k2) + L(q2, k1)`` of the official MoCo CIFAR-10
    demo (``loss_12 + loss_21``, not halved, like :func:`models.losses.symmetric_loss`).

    ``q_v``: queries of view v (online encoder), ``k_v``: keys of view v (momentum
    encoder), ``queue``: [K, d]. Halve it to match an asymmetric loss's scale.
    """
    return (info_nce(q1, k2, queue, temperature)
            + info_nce(q2, k1, queue, temperature))


def barlow_twins(z1, z2, lambd=5e-3, all_reduce_sum=None, batch_size=None, epsilon=1e-5):
    """Barlow Twins (Zbontar et al. 2021, Eq. 1-2).

    Each of ``z1, z2`` ([n, d]) is standardised along the batch like an affine-free
    ``BatchNorm1d`` in training mode: ``(z - mean) / sqrt(var + epsilon)`` with the
    biased variance. ``C = z1n^T z2n / N`` and the loss is
    ``sum_i (1 - C_ii)^2 + lambd sum_{i != j} C_ij^2`` (no further scaling; the
    official code's optional loss scale is left to the caller).

    Under distribution the batch moments and C must be those of the global batch
    (the official code uses SyncBatchNorm and all-reduces C): ``all_reduce_sum``
    sums the per-replica moments and ``z1n^T z2n``, so every replica returns the
    same global loss. ``batch_size``: the global N if known; by default N is the
    all-reduced number of rows.
    """
    reduce_sum = all_reduce_sum or _identity
    z = ops.stack([_f32(z1), _f32(z2)])  # [2, n, d]: both views share each collective
    if batch_size is None:
        n = reduce_sum(ops.cast(ops.shape(z)[1], "float32"))
    else:
        n = ops.cast(batch_size, "float32")
    mean = reduce_sum(ops.sum(z, axis=1, keepdims=True)) / n
    centred = z - mean
    var = reduce_sum(ops.sum(ops.square(centred), axis=1, keepdims=True)) / n
    z = centred * ops.rsqrt(var + epsilon)
    c = reduce_sum(ops.matmul(ops.transpose(z[0]), z[1])) / n  # [d, d]
    on_diagonal = ops.sum(ops.square(1.0 - ops.diagonal(c)))
    off_mask = 1.0 - ops.eye(ops.shape(c)[0], dtype="float32")
    off_diagonal = ops.sum(ops.square(c * off_mask))
    return on_diagonal + lambd * off_diagonal
