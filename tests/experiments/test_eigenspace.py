"""Tests for experiments.eigenspace against matrices with known eigenvectors."""

import json
import os

import numpy as np
import pytest

from experiments import eigenspace
from experiments.eigenspace import (eigen_metrics, least_squares_predictor,
                                    load_eigenspace, save_eigenspace)

D = 6


def _orthogonal(rng, d=D):
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


@pytest.fixture
def basis():
    rng = np.random.default_rng(0)
    q = _orthogonal(rng)
    s = np.array([5.0, 3.0, 2.0, 1.0, 0.5, 0.1])
    return q, s, q @ np.diag(s) @ q.T


def test_wp_equal_to_f_is_aligned_and_symmetric(basis):
    q, s, f = basis
    out = eigen_metrics(f, f)
    np.testing.assert_allclose(out["f_eigenvalues"], s, atol=1e-12)
    np.testing.assert_allclose(out["wp_eigenvalues"], s, atol=1e-12)
    np.testing.assert_allclose(out["alignment"], np.ones(D), atol=1e-12)
    assert out["asymmetry"] == pytest.approx(0.0, abs=1e-14)
    for key in ("f_eigenvalues", "wp_eigenvalues", "alignment"):
        assert out[key].dtype == np.float64 and out[key].shape == (D,)


def test_f_eigenvalues_sorted_descending_from_shuffled_spectrum():
    rng = np.random.default_rng(1)
    q = _orthogonal(rng)
    s = rng.uniform(0.1, 4.0, D)   # unsorted on purpose
    out = eigen_metrics(q @ np.diag(s) @ q.T, np.eye(D))
    np.testing.assert_allclose(out["f_eigenvalues"], np.sort(s)[::-1], atol=1e-12)


def test_negative_predictor_eigenvalues_give_minus_one(basis):
    q, s, f = basis
    t = np.array([1.0, -2.0, 0.5, -0.3, 4.0, 1.5])   # order differs from s on purpose
    out = eigen_metrics(f, q @ np.diag(t) @ q.T)
    np.testing.assert_allclose(out["alignment"], np.sign(t), atol=1e-10)
    np.testing.assert_allclose(out["wp_eigenvalues"], np.sort(t)[::-1], atol=1e-12)


def test_misaligned_predictor_has_known_cosine(basis):
    # Wp rotates u_0 by 60 degrees towards u_1 within their plane: cos = 0.5.
    q, _, f = basis
    c, sn = 0.5, np.sqrt(0.75)
    rotation = np.eye(D)
    rotation[:2, :2] = [[c, -sn], [sn, c]]
    out = eigen_metrics(f, q @ rotation @ q.T)
    np.testing.assert_allclose(out["alignment"][:2], [0.5, 0.5], atol=1e-12)
    np.testing.assert_allclose(out["alignment"][2:], 1.0, atol=1e-12)


def test_zero_predictor_and_zero_columns():
    out = eigen_metrics(np.diag([3.0, 2.0, 1.0]), np.zeros((3, 3)))
    np.testing.assert_array_equal(out["alignment"], np.zeros(3))
    assert out["asymmetry"] == 0.0
    # Wp kills only the second eigenvector e_1 of F.
    out = eigen_metrics(np.diag([3.0, 2.0, 1.0]), np.diag([1.0, 0.0, -1.0]))
    np.testing.assert_allclose(out["alignment"], [1.0, 0.0, -1.0], atol=1e-15)


def test_antisymmetric_perturbation_asymmetry(basis):
    _, _, f = basis
    rng = np.random.default_rng(2)
    a = rng.standard_normal((D, D))
    skew = 0.3 * (a - a.T)
    wp = f + skew
    expected = np.linalg.norm(2 * skew) / np.sqrt(np.linalg.norm(f) ** 2
                                                   + np.linalg.norm(skew) ** 2)
    out = eigen_metrics(f, wp)
    assert out["asymmetry"] == pytest.approx(expected, rel=1e-12)
    # Symmetric part is f: the spectrum is unchanged by the skew part.
    np.testing.assert_allclose(out["wp_eigenvalues"], np.sort(np.linalg.eigvalsh(f))[::-1],
                               atol=1e-10)


def test_wp_eigenvalues_of_nonsymmetric_matrix():
    rng = np.random.default_rng(3)
    wp = rng.standard_normal((D, D))
    sym = (wp + wp.T) / 2
    # Independent reference: roots of the characteristic polynomial of sym.
    reference = np.sort(np.roots(np.poly(sym)).real)[::-1]
    out = eigen_metrics(np.eye(D), wp)
    np.testing.assert_allclose(out["wp_eigenvalues"], reference, atol=1e-8)


def test_alignment_against_direct_formula():
    rng = np.random.default_rng(4)
    a = rng.standard_normal((D, D))
    f = a @ a.T
    wp = rng.standard_normal((D, D))
    out = eigen_metrics(f, wp)
    values, vectors = np.linalg.eig(f)
    for j in np.argsort(-values.real):
        u = vectors[:, j].real
        expected = u @ wp @ u / (np.linalg.norm(u) * np.linalg.norm(wp @ u))
        rank = int(np.sum(values.real > values.real[j]))
        assert out["alignment"][rank] == pytest.approx(expected, abs=1e-10)


@pytest.mark.parametrize("f, wp, fragment", [
    (np.eye(3), np.eye(4), "(3, 3)"),
    (np.ones((2, 3)), np.ones((2, 3)), "(2, 3)"),
    (np.ones(3), np.eye(3), "(3,)"),
    (np.array([[1.0, np.nan], [0.0, 1.0]]), np.eye(2), "finite"),
    (np.eye(2), np.array([[np.inf, 0.0], [0.0, 1.0]]), "finite"),
    (np.zeros((0, 0)), np.zeros((0, 0)), "(0, 0)"),
])
def test_bad_inputs_raise(f, wp, fragment):
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        eigen_metrics(f, wp)


# ---------------------------------------------------------------------------
# least_squares_predictor
# ---------------------------------------------------------------------------

def test_least_squares_recovers_linear_map():
    rng = np.random.default_rng(5)
    w = rng.standard_normal((4, D))
    z = rng.standard_normal((50, D))
    estimate = least_squares_predictor(z, z @ w.T)
    assert estimate.shape == (4, D)
    np.testing.assert_allclose(estimate, w, atol=1e-10)


def test_least_squares_two_layer_relu_matches_lstsq():
    rng = np.random.default_rng(6)
    w1, w2 = rng.standard_normal((8, D)), rng.standard_normal((D, 8))
    z = rng.standard_normal((40, D))
    p = np.maximum(z @ w1.T, 0.0) @ w2.T
    reference = np.linalg.lstsq(z, p, rcond=None)[0].T
    estimate = least_squares_predictor(z, p)
    np.testing.assert_allclose(estimate, reference, atol=1e-10)
    assert not np.allclose(estimate, w2 @ w1, atol=1e-2)   # the kernel product is wrong
    # Normal equations hold: residual orthogonal to the inputs.
    np.testing.assert_allclose(z.T @ (p - z @ estimate.T), 0.0, atol=1e-9)


def test_least_squares_underdetermined_and_ridge():
    rng = np.random.default_rng(7)
    z = rng.standard_normal((3, D))             # N < d
    p = rng.standard_normal((3, D))
    estimate = least_squares_predictor(z, p)
    np.testing.assert_allclose(estimate, (np.linalg.pinv(z) @ p).T, atol=1e-10)
    np.testing.assert_allclose(z @ estimate.T, p, atol=1e-10)   # interpolates
    ridge = least_squares_predictor(z, p, ridge=0.5)
    expected = np.linalg.inv(z.T @ z + 0.5 * np.eye(D)) @ z.T @ p
    np.testing.assert_allclose(ridge, expected.T, atol=1e-10)
    with pytest.raises(ValueError, match="ridge"):
        least_squares_predictor(z, p, ridge=-1.0)
    with pytest.raises(ValueError, match=r"\(3, 6\).*\(4, 6\)"):
        least_squares_predictor(z, np.zeros((4, D)))


# ---------------------------------------------------------------------------
# storage
# ---------------------------------------------------------------------------

def _records(count=3, d=4):
    rng = np.random.default_rng(8)
    return [{"epoch": 5 * i, "f_eigenvalues": np.sort(rng.random(d))[::-1],
             "wp_eigenvalues": rng.standard_normal(d), "alignment": rng.uniform(-1, 1, d),
             "asymmetry": float(rng.random())} for i in range(count)]


def test_save_load_round_trip_exact(tmp_path):
    records = _records()
    save_eigenspace(records, tmp_path / "run")
    loaded = load_eigenspace(tmp_path / "run")
    assert len(loaded) == len(records)
    for want, got in zip(records, loaded):
        assert got["epoch"] == want["epoch"] and isinstance(got["epoch"], int)
        assert got["asymmetry"] == want["asymmetry"]
        for key in ("f_eigenvalues", "wp_eigenvalues", "alignment"):
            np.testing.assert_array_equal(got[key], want[key])
            assert got[key].dtype == np.float64
    with np.load(tmp_path / "run" / "eigenspace.npz", allow_pickle=False) as data:
        assert set(data.files) == {"epochs", "f_eigenvalues", "wp_eigenvalues",
                                   "alignment", "asymmetry"}
        np.testing.assert_array_equal(data["epochs"], [0, 5, 10])
        assert data["alignment"].shape == (3, 4)
    summary = json.loads((tmp_path / "run" / "eigenspace.json").read_text())
    assert summary["format_version"] == eigenspace.FORMAT_VERSION
    assert summary["epochs"] == [0, 5, 10]
    assert summary["asymmetry"] == [r["asymmetry"] for r in records]
    assert summary["last"]["epoch"] == 10
    assert not [name for name in os.listdir(tmp_path / "run") if name.endswith(".tmp")]


def test_save_overwrites_and_works_with_eigen_metrics(tmp_path):
    save_eigenspace(_records(), tmp_path)
    record = {"epoch": 1, **eigen_metrics(np.diag([2.0, 1.0]), np.eye(2))}
    save_eigenspace([record], tmp_path)
    (loaded,) = load_eigenspace(tmp_path)
    np.testing.assert_array_equal(loaded["alignment"], [1.0, 1.0])


def test_missing_directory_or_files(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(ValueError, match="nope"):
        load_eigenspace(missing)
    save_eigenspace(_records(), tmp_path)
    os.remove(tmp_path / "eigenspace.npz")
    with pytest.raises(ValueError, match="eigenspace.npz"):
        load_eigenspace(tmp_path)
    save_eigenspace(_records(), tmp_path)
    os.remove(tmp_path / "eigenspace.json")
    with pytest.raises(ValueError, match="eigenspace.json"):
        load_eigenspace(tmp_path)


def test_corrupt_files(tmp_path):
    save_eigenspace(_records(), tmp_path)
    (tmp_path / "eigenspace.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="eigenspace.npz"):
        load_eigenspace(tmp_path)
    save_eigenspace(_records(), tmp_path)
    (tmp_path / "eigenspace.json").write_text("{truncated")
    with pytest.raises(ValueError, match="eigenspace.json"):
        load_eigenspace(tmp_path)
    # A pickled object array must not be loaded.
    save_eigenspace(_records(), tmp_path)
    np.savez(tmp_path / "eigenspace.npz", epochs=np.array([0, 5, 10]),
             f_eigenvalues=np.array([None, {}], dtype=object), wp_eigenvalues=np.zeros((3, 4)),
             alignment=np.zeros((3, 4)), asymmetry=np.zeros(3))
    with pytest.raises(ValueError, match="eigenspace.npz"):
        load_eigenspace(tmp_path)
    # Missing key.
    np.savez(tmp_path / "eigenspace.npz", epochs=np.array([0, 5, 10]))
    with pytest.raises(ValueError, match="eigenspace.npz"):
        load_eigenspace(tmp_path)


def test_unsupported_version_and_mismatch(tmp_path):
    save_eigenspace(_records(), tmp_path)
    path = tmp_path / "eigenspace.json"
    summary = json.loads(path.read_text())
    path.write_text(json.dumps({**summary, "format_version": 99}))
    with pytest.raises(ValueError, match="format_version 99.*eigenspace.json"):
        load_eigenspace(tmp_path)
    path.write_text(json.dumps({**summary, "epochs": [0, 5]}))
    with pytest.raises(ValueError, match="disagree"):
        load_eigenspace(tmp_path)


@pytest.mark.parametrize("records", [[], {"epoch": 0}, None])
def test_save_rejects_bad_records(tmp_path, records):
    with pytest.raises(ValueError):
        save_eigenspace(records, tmp_path)


def test_save_rejects_inconsistent_records(tmp_path):
    records = _records()
    records[1]["alignment"] = np.zeros(5)
    with pytest.raises(ValueError, match=r"records\[1\]"):
        save_eigenspace(records, tmp_path)
    records = _records()
    records[0]["epoch"] = 1.5
    with pytest.raises(ValueError, match="epoch"):
        save_eigenspace(records, tmp_path)
