"""The exact-resume checkpoint: every array that decides the next step, saved after each
epoch by variable path (format 2) and restored by path; a missing, extra or reshaped array is
a one-line error naming the variable (docs/faults.md)."""

import json
import os
import re

import keras
import numpy as np

from experiments.callbacks import NonFiniteStateError, checkpoint_note


def _stable_names(names):
    """``names`` with the optimizers' part made independent of the process: Keras numbers
    the optimizers a process makes (``sgd``, ``sgd_1``, ...), so the first part of an
    optimizer variable's path becomes the optimizer's place among those of this model
    (``optimizer/sgd_3/x`` -> ``optimizer/0.sgd/x``). A slot keeps the rest of its path,
    which Keras derives from its model variable's path."""
    places, out = {}, []
    for name in names:
        if not name.startswith("optimizer/"):
            out.append(name)
            continue
        owner, _, rest = name[len("optimizer/"):].rpartition("/")
        place = places.setdefault(owner, len(places))
        out.append(f"optimizer/{place}.{re.sub(r'_[0-9]+$', '', owner)}/{rest}")
    return out


def training_state(model):
    """``[(name, variable)]`` of every array that decides what the next step does:
    the model's weights (online and target networks, predictor, BatchNorm
    statistics, step counter, F, queues, prototypes) and the optimizer's variables
    (iterations, momentum / Adam slots, loss scale), named by path (unique; the
    optimizers' part by :func:`_stable_names`). The optimizer must be built."""
    owner = {}  # which sub-network (online_encoder, target_encoder, ...) holds a weight
    for layer in model.layers:
        for v in layer.weights:
            owner.setdefault(id(v), layer.name)
    seen, state = set(), []
    for prefix, variables in (("model", model.weights),
                              ("optimizer", model.optimizer.variables)):
        for v in variables:
            if id(v) in seen:
                continue
            seen.add(id(v))
            where = f"{owner[id(v)]}/" if id(v) in owner else ""
            state.append((f"{prefix}/{where}{getattr(v, 'path', v.name)}", v))
    names = _stable_names([name for name, _ in state])
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"Two training-state variables share the path {twice[0]!r}: a "
                         "checkpoint could not tell them apart. Give their layers distinct "
                         "names.")
    return list(zip(names, (v for _, v in state)))


def non_finite_arrays(named_arrays):
    """Names of the floating-point arrays holding a NaN or Inf."""
    return [name for name, a in named_arrays
            if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a))]


def _read_arrays(path, meta):
    """``{name: array}`` of the checkpoint npz ``path`` described by ``meta`` (its
    state.json): keyed by name (format 2), or by position with the names in ``meta``
    (format 1, their optimizer part made stable by :func:`_stable_names`)."""
    version = meta.get("format", 1)
    if version not in (1, RunCheckpoint.FORMAT):
        raise ValueError(f"The checkpoint {path!r} is in format {version}; this version of "
                         f"the package reads formats 1 and {RunCheckpoint.FORMAT}.")
    try:
        with np.load(path) as saved:
            arrays = {name: saved[name] for name in saved.files}
    except (OSError, ValueError, EOFError) as error:
        raise ValueError(f"Corrupt checkpoint {path!r}: {error}") from None
    if version == RunCheckpoint.FORMAT:
        return arrays
    names = meta.get("names")
    positions = [f"a{i:05d}" for i in range(len(arrays))]
    if not isinstance(names, list) or len(names) != len(arrays) or set(positions) != set(
            arrays):
        raise ValueError(f"The checkpoint {path!r} is in the positional format 1 without "
                         "the names of its arrays in state.json: it cannot be restored by "
                         "variable path.")
    return dict(zip(_stable_names(names), (arrays[key] for key in positions)))


class RunCheckpoint(keras.callbacks.Callback):
    """Checkpoint of the whole training state after every epoch, for an exact resume.

    ``directory/state.json`` (``format``, ``epoch``, the history rows so far) names
    ``directory/state-EPOCH.npz``: every array of :func:`training_state`, keyed by its
    name (variable path), and restored by it: an array missing, left over or of another
    shape is a one-line ``ValueError`` naming the variable. Checkpoints of format 1
    (arrays ``a00000``, ... in the order of the ``names`` in state.json) are read too.
    Each is written to a temporary file and renamed; the npz goes first, so
    ``state.json`` always names a complete npz, and the previous npz is deleted
    only after the new ``state.json`` is in place. A state with a NaN or Inf in any
    array is never written (:class:`NonFiniteStateError`; the previous checkpoint
    stays). Everything else a resumed epoch sees is a function of (seed, epoch,
    step): see ``data_processing.augmentations.pretraining_dataset``.

    ``on_saved(rows)`` (optional) is called after each checkpoint with the history
    rows (``{"epoch": 1-based, metric: float}``) of every epoch so far.
    """

    STATE_JSON = "state.json"
    #: 2: the npz keyed by variable path; 1 (no ``format`` in state.json): positional.
    FORMAT = 2

    def __init__(self, directory, on_saved=None):
        super().__init__()
        self.directory = directory
        self.on_saved = on_saved
        self.saved_epoch = 0
        self.rows = []

    def _meta_path(self):
        return os.path.join(self.directory, self.STATE_JSON)

    def read_meta(self):
        """The saved ``state.json`` as a dict, or None when there is no checkpoint."""
        path = self._meta_path()
        if not os.path.exists(path):
            return None
        try:
            with open(path) as f:
                meta = json.load(f)
            int(meta["epoch"])
            return meta
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f"Corrupt checkpoint {path!r}: {error}") from None

    def restore(self, model):
        """Loads the checkpoint into ``model`` (compiled, optimizer built); returns
        its epoch (0 when there is none)."""
        meta = self.read_meta()
        if meta is None:
            return 0
        path = os.path.join(self.directory, meta["arrays"])
        arrays = _read_arrays(path, meta)
        state = training_state(model)
        mismatch = f"The checkpoint {path!r} does not match this model:"
        for name, v in state:
            if name not in arrays:
                raise ValueError(f"{mismatch} it has no array for {name!r}.")
            if tuple(arrays[name].shape) != tuple(v.shape):
                raise ValueError(f"{mismatch} {name!r} has shape {tuple(arrays[name].shape)}"
                                 f", the model's {tuple(v.shape)}.")
        extra = sorted(set(arrays) - {name for name, _ in state})
        if extra:
            raise ValueError(f"{mismatch} it holds {extra[0]!r}, which the model lacks.")
        for name, v in state:
            v.assign(arrays[name])
        self.saved_epoch = int(meta["epoch"])
        self.rows = list(meta["rows"])
        return self.saved_epoch

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        named = [(name, np.asarray(keras.ops.convert_to_numpy(v)))
                 for name, v in training_state(self.model)]
        bad = non_finite_arrays(named)
        if bad:
            shown = ", ".join(bad[:3]) + (", ..." if len(bad) > 3 else "")
            raise NonFiniteStateError(
                f"Non-finite values in {len(bad)} of the {len(named)} model and optimizer "
                f"arrays after epoch {epoch + 1} ({shown}); {checkpoint_note(self)}.")
        from experiments import safe_io
        epoch_done = epoch + 1
        name = f"state-{epoch_done}.npz"
        meta = {"format": self.FORMAT, "epoch": epoch_done, "arrays": name,
                "rows": self.rows + [row]}
        try:
            safe_io.atomic_write(os.path.join(self.directory, name),
                                 lambda f: np.savez(f, **dict(named)))
            safe_io.write_json(self._meta_path(), meta, sort_keys=False)  # row order kept
        except safe_io.WriteError as error:
            error.note = checkpoint_note(self)
            raise
        for old in os.listdir(self.directory):
            if old.startswith("state-") and old.endswith(".npz") and old != name:
                try:
                    os.remove(os.path.join(self.directory, old))
                except OSError:
                    pass
        self.rows.append(row)
        self.saved_epoch = epoch_done
        if self.on_saved is not None:
            self.on_saved(list(self.rows))
