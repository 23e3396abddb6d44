"""Eigenspace alignment of the predictor ``Wp`` and the correlation ``F`` (NumPy only).

Tian, Chen & Ganguli (ICML 2021), Sec. 3.1 (Theorem 3, Fig. 2): with a linear predictor
trained by gradient descent, ``Wp`` becomes (nearly) symmetric and its
eigenvectors align with those of ``F = E[z z^T]``, the correlation of the
projector outputs; DirectPred (Sec. 4, Eq. 18) then sets ``Wp`` directly from ``F``.

Convention: ``Wp`` acts on column vectors, ``p = Wp z`` (a Keras ``Dense``
kernel ``K`` is ``Wp^T``); ``F`` is ``d x d``.
"""

import json
import os
import zipfile
from typing import TypedDict

import numpy as np

from experiments import safe_io

__all__ = ["EigenspaceRecord", "FORMAT_VERSION", "eigen_metrics",
           "least_squares_predictor", "save_eigenspace", "load_eigenspace"]

#: Version of the on-disk format written by :func:`save_eigenspace`.
FORMAT_VERSION = 1
NPZ_NAME = "eigenspace.npz"
JSON_NAME = "eigenspace.json"
_ARRAY_KEYS = ("f_eigenvalues", "wp_eigenvalues", "alignment")


class EigenspaceRecord(TypedDict):
    """One snapshot: :func:`eigen_metrics` output plus the epoch it was taken at."""

    epoch: int
    f_eigenvalues: np.ndarray
    wp_eigenvalues: np.ndarray
    alignment: np.ndarray
    asymmetry: float


def _as_square(name, value):
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be a numeric square matrix. Received: {name}="
                         f"{type(value).__name__} ({error})") from None
    if array.ndim != 2 or array.shape[0] != array.shape[1] or array.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty square matrix. "
                         f"Received: {name}.shape={array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite. Received: {name} with "
                         f"{int(np.size(array) - np.isfinite(array).sum())} non-finite entries")
    return array


def eigen_metrics(F, Wp):
    """Spectra of ``F`` and ``Wp`` and their eigenspace alignment (paper Sec. 3.1, Fig. 2).

    Returns a dict of float64 arrays:

    - ``f_eigenvalues``: eigenvalues of ``(F + F^T)/2``, descending;
    - ``wp_eigenvalues``: eigenvalues of ``(Wp + Wp^T)/2``, descending;
    - ``alignment``: for each eigenvector ``u_j`` of ``F`` (same order),
      ``cos(u_j, Wp u_j)`` (0 where ``Wp u_j = 0``);
    - ``asymmetry`` (0-d): ``|Wp - Wp^T|_F / |Wp|_F`` (0 for ``Wp = 0``).

    Alignment is measured per eigenvector of ``F`` because the paper's claim is
    that ``Wp`` shares ``F``'s eigenbasis (``Wp u_j = p_j u_j``): then
    ``cos = sign(p_j)``, i.e. +-1, whatever ``Wp``'s eigenvalue ordering, and it
    stays well defined for a non-symmetric ``Wp`` (complex eigenvectors) and
    shows *which* directions (large vs small ``s_j``) are aligned. The cosine
    is invariant to the sign of ``u_j``; for repeated eigenvalues of ``F`` the
    basis within the eigenspace is arbitrary.
    """
    F = _as_square("F", F)
    Wp = _as_square("Wp", Wp)
    if F.shape != Wp.shape:
        raise ValueError("F and Wp must have the same shape. "
                         f"Received: F.shape={F.shape}, Wp.shape={Wp.shape}")
    f_values, f_vectors = np.linalg.eigh((F + F.T) / 2.0)
    order = np.argsort(f_values)[::-1]
    f_values, f_vectors = f_values[order], f_vectors[:, order]
    wp_values = np.sort(np.linalg.eigvalsh((Wp + Wp.T) / 2.0))[::-1]

    mapped = Wp @ f_vectors                                   # columns Wp u_j
    numerator = np.einsum("ij,ij->j", f_vectors, mapped)
    norms = np.linalg.norm(f_vectors, axis=0) * np.linalg.norm(mapped, axis=0)
    alignment = np.divide(numerator, norms, out=np.zeros_like(numerator),
                          where=norms > 0)
    alignment = np.clip(alignment, -1.0, 1.0)

    wp_norm = np.linalg.norm(Wp)
    asymmetry = np.linalg.norm(Wp - Wp.T) / wp_norm if wp_norm > 0 else 0.0
    return {"f_eigenvalues": f_values, "wp_eigenvalues": wp_values,
            "alignment": alignment, "asymmetry": np.float64(asymmetry)}


def least_squares_predictor(z, p, ridge=0.0):
    """Effective linear predictor: ``argmin_W sum_n |p_n - W z_n|^2 + ridge |W|_F^2``.

    ``z`` is ``[N, d_in]`` (predictor inputs), ``p`` is ``[N, d_out]`` (its
    outputs on the same batch); returns ``Wp`` of shape ``[d_out, d_in]``.

    Why: Sec. 3.1's analysis is about a linear ``Wp``. For a 2-layer predictor
    ``Dense -> BatchNorm -> ReLU -> Dense`` the map is nonlinear and
    data-dependent: BN rescales/shifts every hidden unit by batch statistics
    and ``gamma, beta``, and ReLU gates about half of the units off, so the
    product of the two kernels (what the original TF2 reproduction used) is not
    the map the network applies. The least-squares fit on actual ``(z, p)``
    pairs is the best linear approximation of the map *on the data
    distribution*, and reduces to the exact ``Wp`` for a linear predictor.
    (No intercept is fitted, matching ``p = Wp z``.)

    With ``ridge = 0`` this is ``np.linalg.lstsq``'s minimum-norm solution,
    which is well defined when ``N < d_in`` (underdetermined) or ``z`` is rank
    deficient; ``ridge > 0`` solves ``(Z^T Z + ridge I) W^T = Z^T P``.
    """
    z = np.asarray(z, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    if z.ndim != 2 or p.ndim != 2 or z.shape[0] != p.shape[0] or z.shape[0] == 0:
        raise ValueError("z and p must be 2-D [N, d] with the same N >= 1. "
                         f"Received: z.shape={z.shape}, p.shape={p.shape}")
    if not (np.all(np.isfinite(z)) and np.all(np.isfinite(p))):
        raise ValueError("z and p must be finite.")
    ridge = float(ridge)
    if not (np.isfinite(ridge) and ridge >= 0.0):
        raise ValueError(f"ridge must be finite and >= 0. Received: ridge={ridge!r}")
    if ridge == 0.0:
        kernel, *_ = np.linalg.lstsq(z, p, rcond=None)         # [d_in, d_out]
    else:
        gram = z.T @ z + ridge * np.eye(z.shape[1])
        kernel = np.linalg.solve(gram, z.T @ p)
    return kernel.T


# ---------------------------------------------------------------------------
# Storage
# ---------------------------------------------------------------------------

def _json_float(value):
    value = float(value)
    return value if np.isfinite(value) else None


def _stack_records(records):
    if isinstance(records, dict) or not records:
        raise ValueError("records must be a non-empty list of dicts. "
                         f"Received: {type(records).__name__} of length "
                         f"{len(records) if hasattr(records, '__len__') else '?'}")
    epochs, asym, arrays = [], [], {key: [] for key in _ARRAY_KEYS}
    dim = None
    for i, record in enumerate(records):
        missing = {"epoch", "asymmetry", *_ARRAY_KEYS} - set(record)
        if missing:
            raise ValueError(f"records[{i}] lacks keys {sorted(missing)}.")
        epoch = record["epoch"]
        if (isinstance(epoch, (bool, np.bool_, str, bytes))
                or not isinstance(epoch, (int, float, np.integer, np.floating))
                or int(epoch) != epoch):
            raise ValueError(f"records[{i}]['epoch'] must be an int. Received: {epoch!r}")
        epochs.append(int(epoch))
        asym.append(float(record["asymmetry"]))
        for key in _ARRAY_KEYS:
            value = np.asarray(record[key], dtype=np.float64)
            if value.ndim != 1 or (dim is not None and value.shape[0] != dim):
                raise ValueError(f"records[{i}]['{key}'] must be 1-D of length "
                                 f"{dim if dim is not None else 'd'}. Received: shape {value.shape}")
            dim = value.shape[0]
            arrays[key].append(value)
    stacked = {key: np.stack(values) for key, values in arrays.items()}
    stacked["epochs"] = np.asarray(epochs, dtype=np.int64)
    stacked["asymmetry"] = np.asarray(asym, dtype=np.float64)
    return stacked


def save_eigenspace(records, directory):
    """Write ``records`` (list of :class:`EigenspaceRecord`) to ``directory``.

    ``eigenspace.npz``: stacked ``epochs [E]``, ``f_eigenvalues``,
    ``wp_eigenvalues``, ``alignment [E, d]``, ``asymmetry [E]`` (no pickled
    objects). ``eigenspace.json``: ``format_version``, ``epochs``,
    ``asymmetry`` and a summary of the last record. Each file is written to a
    temporary file, fsynced and ``os.replace``-d (:func:`experiments.safe_io.atomic_write`).
    Returns the npz path.
    """
    stacked = _stack_records(records)
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    last = {key: stacked[key][-1] for key in _ARRAY_KEYS}
    summary = {
        "format_version": FORMAT_VERSION,
        "dim": int(last["alignment"].shape[0]),
        "epochs": stacked["epochs"].tolist(),
        "asymmetry": [_json_float(v) for v in stacked["asymmetry"]],
        "last": {
            "epoch": int(stacked["epochs"][-1]),
            "asymmetry": _json_float(stacked["asymmetry"][-1]),
            "mean_alignment": _json_float(np.mean(last["alignment"])),
            "min_alignment": _json_float(np.min(last["alignment"])),
            "f_eigenvalue_max": _json_float(np.max(last["f_eigenvalues"])),
            "f_eigenvalue_min": _json_float(np.min(last["f_eigenvalues"])),
            "wp_eigenvalue_max": _json_float(np.max(last["wp_eigenvalues"])),
            "wp_eigenvalue_min": _json_float(np.min(last["wp_eigenvalues"])),
            "wp_negative_eigenvalues": int(np.sum(last["wp_eigenvalues"] < 0)),
        },
    }
    safe_io.atomic_write(os.path.join(directory, NPZ_NAME),
                         lambda handle: np.savez(handle, **stacked))
    safe_io.write_text(os.path.join(directory, JSON_NAME), json.dumps(summary, indent=2))
    return os.path.join(directory, NPZ_NAME)


def load_eigenspace(directory):
    """Read what :func:`save_eigenspace` wrote; returns a list of records.

    Raises ``ValueError`` naming the path if the directory or a file is
    missing or corrupt, the two files disagree, or ``format_version`` is not
    supported.
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise ValueError(f"Eigenspace directory not found: {directory!r}")
    json_path = os.path.join(directory, JSON_NAME)
    npz_path = os.path.join(directory, NPZ_NAME)
    try:
        with open(json_path, "r", encoding="utf-8") as handle:
            summary = json.load(handle)
    except FileNotFoundError:
        raise ValueError(f"Missing eigenspace summary file: {json_path!r}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"Corrupt eigenspace summary file {json_path!r}: {error}") from None
    version = summary.get("format_version") if isinstance(summary, dict) else None
    if version != FORMAT_VERSION:
        raise ValueError(f"Unsupported eigenspace format_version {version!r} in "
                         f"{json_path!r} (supported: {FORMAT_VERSION}).")
    required = ("epochs", "asymmetry", *_ARRAY_KEYS)
    try:
        with np.load(npz_path, allow_pickle=False) as data:
            arrays = {key: np.asarray(data[key]) for key in required}
    except FileNotFoundError:
        raise ValueError(f"Missing eigenspace array file: {npz_path!r}") from None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"Corrupt eigenspace array file {npz_path!r}: {error}") from None
    epochs = arrays["epochs"]
    count = epochs.shape[0] if epochs.ndim == 1 else -1
    shapes_ok = (count > 0 and arrays["asymmetry"].shape == (count,)
                 and all(arrays[k].ndim == 2 and arrays[k].shape[0] == count
                         and arrays[k].shape == arrays["alignment"].shape
                         for k in _ARRAY_KEYS))
    if not shapes_ok:
        raise ValueError(f"Corrupt eigenspace array file {npz_path!r}: inconsistent shapes "
                         f"{ {k: v.shape for k, v in arrays.items()} }")
    if epochs.tolist() != summary.get("epochs"):
        raise ValueError(f"{npz_path!r} and {json_path!r} disagree on the epochs "
                         "(interrupted write?).")
    return [{"epoch": int(epochs[i]),
             **{key: arrays[key][i].astype(np.float64) for key in _ARRAY_KEYS},
             "asymmetry": float(arrays["asymmetry"][i])}
            for i in range(count)]
