"""After pre-training: load_encoder / export_encoder, test.py's evaluation protocols (linear,
knn, finetune), label fractions, transfer to another image folder, evaluations.json, under
TensorFlow and JAX. One tiny run (synthetic, 16 px, width 1/16) serves every test."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import backends
from experiments import protocols
from tests.models.jax_subprocess import ROOT, jax_available, run_jax_worker
from tests.test_cli import tree_digest as digest

TINY = dict(dataset="synthetic", max_train_examples=48, max_test_examples=24, batch_size=16,
            width=0.0625, image_size=16, epochs_pretraining=1, epochs_finetuning=2,
            knn_every=1)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from config import get_config
    from experiments import train
    results = tmp_path_factory.mktemp("results")
    train(get_config("byol", **TINY), "run", results_dir=str(results), verbose=0)
    return str(results / "run")


def fresh_copy(run_dir, tmp_path, name="copy"):
    target = tmp_path / name
    shutil.copytree(run_dir, target)
    return str(target)


def raw_split(run_dir, split):
    """The run's uint8 images and labels of a split, read by the package's loader."""
    from data_processing import load_dataset_from_config
    from experiments.run_folder import read_run
    data = load_dataset_from_config(read_run(run_dir)[1])
    return protocols._arrays(getattr(data, split))


# ---- label fractions (pure NumPy) -------------------------------------------------------

def test_labelled_subset_is_class_balanced_seeded_and_nested():
    labels = np.repeat(np.arange(4), [100, 40, 40, 20])
    np.random.default_rng(1).shuffle(labels)
    for fraction in (0.1, 0.25, 1.0):
        subset = protocols.labelled_subset(labels, fraction, seed=3)
        counts = np.bincount(labels[subset], minlength=4)
        np.testing.assert_array_equal(counts, np.round(fraction * np.array([100, 40, 40, 20])))
        np.testing.assert_array_equal(subset, np.unique(subset))  # sorted, no repeats
        np.testing.assert_array_equal(subset, protocols.labelled_subset(labels, fraction, 3))
    assert len(protocols.labelled_subset(labels, 1.0, 0)) == len(labels)
    small, large = (protocols.labelled_subset(labels, f, 3) for f in (0.1, 0.5))
    assert set(small) <= set(large)
    assert not np.array_equal(small, protocols.labelled_subset(labels, 0.1, 4))
    # a class's choice depends on its own examples only: relabelling class 3 as 2 leaves
    # the examples of classes 0 and 1 chosen as they were
    other = np.where(labels == 3, 2, labels)
    mask = labels < 2
    chosen = np.isin(np.arange(len(labels)), small)
    chosen_other = np.isin(np.arange(len(labels)), protocols.labelled_subset(other, 0.1, 3))
    np.testing.assert_array_equal(chosen[mask], chosen_other[mask])
    with pytest.raises(ValueError, match=r"class 'd' \(20 labelled examples\) without.*"
                                         r"Received: labels_fraction=0.02"):
        protocols.labelled_subset(labels, 0.02, 0, class_names=("a", "b", "c", "d"))
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="labels_fraction must be in"):
            protocols.labelled_subset(labels, bad, 0)


# ---- the kNN against a brute-force NumPy kNN ---------------------------------------------

def numpy_knn_scores(train, labels, test, num_classes, k, temperature):
    """Wu et al. 2018's weighted vote, written out: cosine similarity, the k nearest,
    weights exp(sim / T) summed per class."""
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    test = test / np.linalg.norm(test, axis=1, keepdims=True)
    scores = np.zeros((len(test), num_classes))
    for i, row in enumerate(test @ train.T):
        for j in np.argsort(-row, kind="stable")[:k]:
            scores[i, labels[j]] += np.exp(row[j] / temperature)
    return scores


def test_knn_scores_match_a_brute_force_numpy_knn():
    from experiments.metrics import knn_scores
    rng = np.random.default_rng(0)
    train, test = rng.normal(size=(60, 8)), rng.normal(size=(25, 8))
    labels, test_labels = rng.integers(0, 5, 60), rng.integers(0, 5, 25)
    for k, temperature in ((200, 0.1), (7, 0.5), (1, 0.07)):
        ours = knn_scores(train, labels, test, 5, k=k, temperature=temperature)
        ref = numpy_knn_scores(train, labels, test, 5, min(k, 60), temperature)
        # ours are scaled by exp(-max_sim / T) per row: compare the per-row shares
        np.testing.assert_allclose(ours / ours.sum(1, keepdims=True),
                                   ref / ref.sum(1, keepdims=True), atol=1e-5)
        for top in (1, 5):
            assert protocols.topk_accuracy(ours, test_labels, top) == \
                protocols.topk_accuracy(ref, test_labels, top)


# ---- load_encoder and its export ---------------------------------------------------------

def test_load_encoder_equals_the_training_time_encoder_and_its_export(run_dir, tmp_path):
    import keras

    import models  # noqa: F401
    from experiments import export_encoder, load_encoder
    from experiments.run_folder import RunDirectory, read_run
    from models.classifier import extract_features
    images, labels = raw_split(run_dir, "test")
    config = read_run(run_dir)[1]
    saved = keras.models.load_model(RunDirectory.from_path(run_dir).encoder_model)
    backend = backends.get()
    # the probe's features, normalised in the pipeline
    expected, _ = extract_features(saved, backend.evaluation_dataset(
        backend.load_dataset(config).test, config))
    encoder = load_encoder(run_dir)
    assert not encoder.trainable_weights  # frozen
    for batch in (images, images.astype("float32"), images[:1]):
        np.testing.assert_allclose(np.asarray(encoder(batch)), expected[:len(batch)],
                                   rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(encoder.predict(images, verbose=0), expected, rtol=1e-4,
                               atol=1e-5)
    assert load_encoder(run_dir, trainable=True).trainable_weights

    path = export_encoder(run_dir, str(tmp_path / "served"))
    np.save(tmp_path / "images.npy", images.astype("float32"))
    script = ("import numpy as np, tensorflow as tf, sys\n"
              "m = tf.saved_model.load(sys.argv[1])\n"
              "np.save(sys.argv[3], m.serve(tf.constant(np.load(sys.argv[2]))).numpy())\n")
    done = subprocess.run([sys.executable, "-c", script, path, str(tmp_path / "images.npy"),
                           str(tmp_path / "served.npy")], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
                          cwd=str(tmp_path))  # a fresh process, without this package
    assert done.returncode == 0, done.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / "served.npy"), expected, rtol=1e-4,
                               atol=1e-5)


def test_an_image_size_the_encoder_cannot_take_is_refused():
    from config import get_config
    from experiments.pretrained import encoder_at_size
    from models import build_encoder
    config = get_config("byol", **{**TINY, "backbone": "alexnet", "image_size": 16})
    encoder = build_encoder(config)
    assert encoder_at_size(encoder, config, 24).output.shape[-1] == encoder.output.shape[-1]
    with pytest.raises(ValueError, match=r"cannot take 8 px images.*Received: image_size=8"):
        encoder_at_size(encoder, config, 8)


# ---- the protocols on the run -----------------------------------------------------------

def test_protocols_record_entries_with_independent_references(run_dir, tmp_path):
    from experiments import evaluate_protocol, load_encoder
    run = fresh_copy(run_dir, tmp_path)
    metrics_before = open(os.path.join(run, "metrics.json"), "rb").read()
    metrics = json.loads(metrics_before)
    linear = evaluate_protocol(run, "linear")
    # all labels, the run's seed and settings: the numbers train.py recorded
    assert linear["top1"] == pytest.approx(metrics["top1"], abs=1e-6)
    assert linear["top5"] == pytest.approx(metrics["top5"], abs=1e-6)
    knn = evaluate_protocol(run, "knn", labels_fraction=0.5, knn_k=5, knn_temperature=0.2)
    # reference: load_encoder's features of the raw images, the subset, a NumPy kNN
    encoder = load_encoder(run)
    train_x, train_y = raw_split(run, "train")
    test_x, test_y = raw_split(run, "test")
    subset = protocols.labelled_subset(train_y, 0.5, seed=0)
    ref = numpy_knn_scores(encoder.predict(train_x[subset], verbose=0), train_y[subset],
                           encoder.predict(test_x, verbose=0), 10, 5, 0.2)
    counts = np.bincount(train_y)
    assert knn["num_train"] == len(subset) == np.sum(np.floor(0.5 * counts + 0.5))
    assert knn["top1"] == pytest.approx(protocols.topk_accuracy(ref, test_y, 1))
    assert knn["params"] == {"k": 5, "temperature": 0.2}
    first_date = knn["date"]
    tuned = evaluate_protocol(run, "finetune", labels_fraction=0.5, epochs=1, batch_size=8)
    assert tuned["params"] == {"learning_rate": 0.05 * 8 / 256, "batch_size": 8}
    assert 0.0 <= tuned["top1"] <= tuned["top5"] <= 1.0

    saved = protocols.read_evaluations(run)
    assert [e["protocol"] for e in saved] == ["linear", "knn", "finetune"]
    again = evaluate_protocol(run, "knn", labels_fraction=0.5, knn_k=5, knn_temperature=0.2)
    other = evaluate_protocol(run, "knn", labels_fraction=0.5, knn_k=6, knn_temperature=0.2)
    saved = protocols.read_evaluations(run)
    assert [(e["protocol"], e.get("params", {}).get("k")) for e in saved] == [
        ("linear", None), ("finetune", None), ("knn", 5), ("knn", 6)]
    assert saved[2]["top1"] == again["top1"] == knn["top1"] and saved[3] == other
    assert saved[2]["date"] >= first_date
    assert open(os.path.join(run, "metrics.json"), "rb").read() == metrics_before

    table, figure_path = protocols.summarise(run)
    lines = table.splitlines()
    assert len(lines) == 1 + 2 + 4  # header, train.py's probe and kNN, four evaluations
    assert lines[1].split()[:3] == ["train.py", "linear", "synthetic"]
    assert figure_path.endswith("evaluations.png") and os.path.getsize(figure_path) > 0
    rows = protocols.recorded_entries(run) + saved
    figure = protocols.evaluations_figure(rows)
    axis = figure.axes[0]
    bars = [p for p in axis.patches]
    assert len(bars) == len(rows) + (len(rows) - 1)  # top-1 each; top-5 but train.py's kNN
    assert [t.get_text() for t in axis.get_yticklabels()] == [protocols.row_label(r)
                                                             for r in rows]
    widths = sorted(round(b.get_width(), 6) for b in bars)
    expected = sorted(round(v, 6) for r in rows for v in (r["top1"], r["top5"])
                      if v is not None)
    assert widths == expected


def write_colour_folder(root, train_per_class=16, test_per_class=8, size=20, seed=0):
    """Two classes that differ only in colour with the same R+G+B at every pixel:
    (t, 0, 50) and (0, t, 50) for the same patterns t, on 20 px (resized to the run's 16)."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for i in range(count):
            t = rng.integers(0, 200, (size, size)).astype(np.uint8)
            zero, fifty = np.zeros_like(t), np.full_like(t, 50)
            for name, rgb in (("red", (t, zero, fifty)), ("green", (zero, t, fifty))):
                os.makedirs(os.path.join(root, split, name), exist_ok=True)
                Image.fromarray(np.stack(rgb, -1)).save(
                    os.path.join(root, split, name, f"{i}.png"))
    return str(root)


def colour_blind(run):
    """Rewrites the run's encoder so that its first convolution sees only the sum of
    the un-normalised channels: frozen features then cannot tell the two colours apart."""
    import keras

    import models  # noqa: F401
    from experiments.run_folder import RunDirectory, read_run
    config = read_run(run)[1]
    path = RunDirectory.from_path(run).encoder_model
    encoder = keras.models.load_model(path)
    conv = next(l for l in encoder.layers if isinstance(l, keras.layers.Conv2D))
    kernel = np.asarray(conv.kernel)
    base = kernel.mean(axis=2)
    conv.kernel.assign(np.stack([base * s for s in config.normalize_std], axis=2))
    encoder.save(path)
    return conv.name


def test_finetuning_trains_the_encoder_and_beats_the_frozen_probe(run_dir, tmp_path):
    import keras

    from experiments import evaluate_protocol
    from experiments.pretrained import _saved_encoder
    from experiments.run_folder import read_run
    run = fresh_copy(run_dir, tmp_path)
    conv_name = colour_blind(run)
    folder = write_colour_folder(tmp_path / "colours")
    linear = evaluate_protocol(run, "linear", dataset="folder", data_dir=folder, epochs=5)
    assert linear["num_classes"] == 2 and linear["dataset"] == "folder:colours"
    assert linear["top1"] <= 0.6  # the frozen features carry no colour: chance (0.5)
    knn = evaluate_protocol(run, "knn", dataset="folder", data_dir=folder)
    assert knn["top1"] <= 0.6

    config = read_run(run)[1]
    encoder = _saved_encoder(run, config)
    before = [np.array(w) for w in encoder.get_layer(conv_name).get_weights()]
    data = backends.get().load_dataset(protocols.evaluation_config(config, "folder", folder))
    train, test = protocols._arrays(data.train), protocols._arrays(data.test)
    model, result = protocols.finetune(encoder, config, train, test, 2, epochs=8,
                                       batch_size=16, learning_rate=0.1, seed=0)
    after = encoder.get_layer(conv_name).get_weights()
    assert not np.allclose(before[0], after[0])  # the encoder trained, not only the head
    assert isinstance(model, keras.Model)
    assert result["top1"] >= linear["top1"] + 0.3, (result, linear)


def test_bad_evaluations_are_refused_in_one_line_and_write_nothing(run_dir, tmp_path):
    from experiments import evaluate_protocol
    run = fresh_copy(run_dir, tmp_path)
    before = digest(run)
    one_class = tmp_path / "one"
    for split in ("train", "test"):
        write_colour_folder(tmp_path / "two")
        os.makedirs(one_class / split, exist_ok=True)
        shutil.copytree(tmp_path / "two" / split / "red", one_class / split / "red")
    unlabelled = tmp_path / "flat"
    for split in ("train", "test"):
        os.makedirs(unlabelled / split)
        shutil.copy(tmp_path / "two" / split / "red" / "0.png", unlabelled / split / "0.png")
    cases = [
        (dict(protocol="linear", labels_fraction=0.05), "without an example"),
        (dict(protocol="linear", labels_fraction=1.5), "labels_fraction must be in"),
        (dict(protocol="knn", dataset="folder", data_dir=str(one_class)), "at least 2"),
        (dict(protocol="knn", dataset="folder", data_dir=str(unlabelled)), "no class"),
        (dict(protocol="linear", knn_k=5), "does not use --knn_k"),
        (dict(protocol="knn", epochs=3), "does not use --epochs"),
        (dict(protocol="svm"), "Unknown protocol"),
        (dict(protocol="knn", data_dir=str(one_class)), "eval_data_dir"),
    ]
    for kwargs, words in cases:
        with pytest.raises(ValueError, match=words) as error:
            evaluate_protocol(run, **kwargs)
        assert "\n" not in str(error.value)
    info_path = os.path.join(run, "run.json")
    saved = open(info_path).read()
    with open(info_path, "w") as f:
        json.dump({**json.loads(saved), "status": "pretrained"}, f)
    with pytest.raises(ValueError, match="not finished"):
        evaluate_protocol(run, "knn")
    with open(info_path, "w") as f:
        f.write(saved)
    assert digest(run) == before


# ---- test.py ------------------------------------------------------------------------------

def run_test_py(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "test.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})


def test_test_py_protocol_flags_table_and_errors(run_dir, tmp_path):
    run = fresh_copy(run_dir, tmp_path, "cli")
    where = ["--name", "cli", "--results_dir", str(tmp_path)]
    done = run_test_py(*where, "--protocol", "knn", "--knn_k", "5", "--labels_fraction", "0.5")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "knn on synthetic (0.5 of 10-class labels, " in done.stdout
    assert any(l.split()[:2] == ["train.py", "linear"] for l in done.stdout.splitlines())
    assert f"figure: {os.path.join(run, 'evaluations.png')}" in done.stdout
    before = digest(run)
    for args, words in ((["--protocol", "linear", "--knn_k", "5"], "does not use --knn_k"),
                        (["--labels_fraction", "0.5"], "add --protocol")):
        bad = run_test_py(*where, *args)
        lines = bad.stderr.strip().splitlines()
        assert bad.returncode == 2 and len(lines) == 1, bad.stderr[-2000:]
        assert lines[0].startswith("test.py: error: ") and words in lines[0]
        assert "Received:" in lines[0]
    assert digest(run) == before
    shown = run_test_py(*where)  # the saved classifier, then every evaluation
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert "top1=" in shown.stdout and "knn  " in shown.stdout


# ---- under JAX ----------------------------------------------------------------------------

@pytest.mark.skipif(not jax_available(), reason="needs the jax extra")
def test_load_encoder_and_every_protocol_under_jax(run_dir, tmp_path):
    from experiments import evaluate_protocol, load_encoder
    images, _ = raw_split(run_dir, "test")
    tf_features = np.asarray(load_encoder(run_dir)(images))
    tf_knn = evaluate_protocol(run_dir, "knn", write=False)
    out = run_jax_worker(f'''
        from experiments import evaluate_protocol, load_encoder
        features = load_encoder({run_dir!r})(INPUTS["images"])
        entries = [evaluate_protocol({run_dir!r}, p, write=False, **kw) for p, kw in (
            ("linear", {{}}), ("knn", {{}}),
            ("finetune", dict(epochs=1, batch_size=16, labels_fraction=0.5)))]
        save(features=features, top1=[e["top1"] for e in entries],
             top5=[e["top5"] for e in entries])
    ''', tmp_path, inputs={"images": images})
    np.testing.assert_allclose(out["features"], tf_features, rtol=1e-3, atol=1e-4)
    assert out["top1"][1] == pytest.approx(tf_knn["top1"], abs=1.5 / 24)
    assert np.all((0 <= out["top1"]) & (out["top1"] <= out["top5"]) & (out["top5"] <= 1))
    assert not os.path.exists(os.path.join(run_dir, "evaluations.json"))
