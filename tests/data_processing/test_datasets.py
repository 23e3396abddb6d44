"""Tests of dataset loading: synthetic, image folder, TensorFlow Datasets (offline)."""

import os

import numpy as np
import pytest
import tensorflow as tf

from config import Config
from data_processing import datasets, sources
from data_processing.datasets import ImageDataset, load_dataset, load_dataset_from_config

COLOURS = {"ant": (230, 20, 20), "bee": (20, 230, 20), "cat": (20, 20, 230)}


def arrays(ds):
    """(images, labels) of a (image, label) dataset, or images of an image dataset."""
    items = list(ds.as_numpy_iterator())
    if isinstance(items[0], tuple):
        return np.stack([x for x, _ in items]), np.array([y for _, y in items])
    return np.stack(items)


# ---------------------------------------------------------------------------
# Synthetic.
# ---------------------------------------------------------------------------

def test_synthetic_shapes_determinism_and_limits():
    a = load_dataset("synthetic", image_size=8, max_train_examples=60, max_test_examples=20, seed=1)
    b = load_dataset("synthetic", image_size=8, max_train_examples=60, max_test_examples=20, seed=1)
    c = load_dataset("synthetic", image_size=8, max_train_examples=60, max_test_examples=20, seed=2)
    assert isinstance(a, ImageDataset)
    assert (a.num_pretrain, a.num_train, a.num_test) == (60, 60, 20)
    assert (a.num_classes, a.image_size) == (10, 8)
    assert len(a.class_names) == 10 and all(isinstance(n, str) for n in a.class_names)
    x, y = arrays(a.train)
    assert x.shape == (60, 8, 8, 3) and x.dtype == np.uint8 and y.dtype == np.int32
    np.testing.assert_array_equal(np.bincount(y, minlength=10), np.full(10, 6))
    np.testing.assert_array_equal(arrays(a.pretrain), x)
    xb, yb = arrays(b.train)
    np.testing.assert_array_equal(x, xb)
    np.testing.assert_array_equal(y, yb)
    assert not np.array_equal(x, arrays(c.train)[0])
    assert not np.array_equal(x[:20], arrays(a.test)[0])  # train and test are different draws


def test_synthetic_defaults():
    data = load_dataset("synthetic", max_test_examples=10)
    assert data.image_size == 32 and data.num_train == sources.SYNTHETIC_TRAIN
    assert data.num_test == 10


def test_synthetic_has_class_structure():
    # Nearest class mean on raw pixels must beat chance (10%) by far; shuffled
    # labels must not (so the check can fail).
    data = load_dataset("synthetic", image_size=16, max_train_examples=1000,
                        max_test_examples=300, seed=0)
    (xtr, ytr), (xte, yte) = arrays(data.train), arrays(data.test)
    xtr = xtr.reshape(len(xtr), -1).astype(np.float32)
    xte = xte.reshape(len(xte), -1).astype(np.float32)

    def accuracy(labels):
        means = np.stack([xtr[labels == c].mean(0) for c in range(10)])
        pred = np.argmin(((xte[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
        return (pred == yte).mean()

    assert accuracy(ytr) > 0.5
    assert accuracy(np.random.default_rng(0).permutation(ytr)) < 0.25


def test_load_dataset_from_config_passes_fields():
    config = Config(dataset="synthetic", image_size=12, max_train_examples=30,
                    max_test_examples=10, seed=4)
    data = load_dataset_from_config(config)
    assert (data.image_size, data.num_train, data.num_test) == (12, 30, 10)
    ref = load_dataset("synthetic", image_size=12, max_train_examples=30, max_test_examples=10,
                       seed=4)
    np.testing.assert_array_equal(arrays(data.test)[0], arrays(ref.test)[0])


def test_subset_indices_is_a_seeded_permutation_prefix():
    idx = sources.subset_indices(100, 30, seed=3)
    assert len(idx) == 30 and len(set(idx)) == 30 and np.all(np.diff(idx) > 0)
    np.testing.assert_array_equal(idx, sources.subset_indices(100, 30, seed=3))
    assert not np.array_equal(idx, sources.subset_indices(100, 30, seed=4))
    np.testing.assert_array_equal(sources.subset_indices(10, None, 0), np.arange(10))
    np.testing.assert_array_equal(sources.subset_indices(10, 50, 0), np.arange(10))


# ---------------------------------------------------------------------------
# Image folder.
# ---------------------------------------------------------------------------

def write_image(path, colour, size=(10, 10)):
    img = np.zeros(size + (3,), np.uint8) + np.array(colour, np.uint8)
    ext = os.path.splitext(path)[1].lower()
    data = tf.io.encode_png(img) if ext == ".png" else tf.io.encode_jpeg(img, quality=95)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tf.io.write_file(path, data)


def make_folder(root, train_per_class=4, test_per_class=2, classes=("cat", "ant", "bee")):
    names = ["a.png", "b.JPG", "c.jpeg", "d.PNG", "e.jpg", "f.png"]
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        for cls in classes:
            for name in names[:n]:
                write_image(os.path.join(root, split, cls, name), COLOURS[cls])
    return str(root)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = make_folder(tmp_path_factory.mktemp("images"))
    # a non-square, larger image, and files that are not images
    write_image(os.path.join(root, "train", "ant", "big.png"), COLOURS["ant"], (12, 16))
    with open(os.path.join(root, "train", "cat", "notes.txt"), "w") as f:
        f.write("not an image")
    os.makedirs(os.path.join(root, "test", ".hidden"))
    return root


def test_folder_classes_labels_and_pixels(folder):
    data = load_dataset("folder", data_dir=folder, image_size=8)
    assert data.class_names == ("ant", "bee", "cat") and data.num_classes == 3
    assert (data.num_train, data.num_test, data.num_pretrain) == (13, 6, 13)
    x, y = arrays(data.train)
    assert x.shape == (13, 8, 8, 3) and x.dtype == np.uint8 and y.dtype == np.int32
    np.testing.assert_array_equal(np.bincount(y), [5, 4, 4])
    for img, label in zip(x, y):  # the decoded colour identifies the class
        expected = np.array(COLOURS[data.class_names[label]])
        assert np.abs(img.reshape(-1, 3).mean(0) - expected).max() < 6
    xt, yt = arrays(data.test)
    np.testing.assert_array_equal(yt, [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(arrays(data.pretrain), x)


def test_folder_without_image_size_keeps_the_first_image_size(folder):
    data = load_dataset("folder", data_dir=folder)
    assert data.image_size == 10
    x, _ = arrays(data.train)
    assert x.shape == (13, 10, 10, 3)


def test_folder_subsets_are_seeded(folder):
    a = load_dataset("folder", data_dir=folder, image_size=8, max_train_examples=5,
                     max_test_examples=2, seed=0)
    assert (a.num_train, a.num_test, a.num_pretrain) == (5, 2, 5)
    xa, ya = arrays(a.train)
    assert len(ya) == 5 and len(arrays(a.test)[1]) == 2
    b = load_dataset("folder", data_dir=folder, image_size=8, max_train_examples=5,
                     max_test_examples=2, seed=0)
    np.testing.assert_array_equal(ya, arrays(b.train)[1])
    labels = {tuple(arrays(load_dataset("folder", data_dir=folder, image_size=8,
                                        max_train_examples=5, seed=s).train)[1])
              for s in range(6)}
    assert len(labels) > 1


def test_folder_decode_images_rejects_non_square_first_image(tmp_path):
    write_image(str(tmp_path / "x.png"), (1, 2, 3), (4, 6))
    with pytest.raises(ValueError, match="x.png"):
        datasets.decode_images([str(tmp_path / "x.png")], None)


@pytest.mark.parametrize("case,pattern", [
    ("missing_root", "does not exist"),
    ("missing_train", "train"),
    ("missing_test", "test"),
    ("no_classes", "No images"),
    ("only_train", "Only in train: \\['dog'\\]"),
    ("only_test", "only in test: \\['emu'\\]"),
    ("empty_class", "bee.*no images"),
    ("bad_image", "broken.png"),
])
def test_folder_errors_name_the_problem(tmp_path, case, pattern):
    root = tmp_path / "data"
    if case != "missing_root":
        make_folder(root, train_per_class=1, test_per_class=1)
    if case == "missing_train":
        os.rename(root / "train", root / "training")
    elif case == "missing_test":
        os.rename(root / "test", root / "val")
    elif case == "no_classes":
        for cls in ("ant", "bee", "cat"):
            for f in os.listdir(root / "train" / cls):
                os.remove(root / "train" / cls / f)
            os.rmdir(root / "train" / cls)
    elif case == "only_train":
        write_image(str(root / "train" / "dog" / "a.png"), (1, 1, 1))
    elif case == "only_test":
        write_image(str(root / "test" / "emu" / "a.png"), (1, 1, 1))
    elif case == "empty_class":
        os.remove(root / "test" / "bee" / "a.png")
    elif case == "bad_image":
        (root / "train" / "cat" / "broken.png").write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match=pattern) as info:
        load_dataset("folder", data_dir=str(root), image_size=8)
    if case in ("missing_root", "missing_train", "missing_test", "empty_class", "bad_image"):
        assert str(root) in str(info.value)


def test_folder_needs_data_dir():
    with pytest.raises(ValueError, match="data_dir"):
        load_dataset("folder")


# ---------------------------------------------------------------------------
# TensorFlow Datasets: failures, and local builders prepared offline.
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tfds():
    return pytest.importorskip("tensorflow_datasets")


def test_tfds_missing_data_without_download_explains_folder(tfds, tmp_path):
    with pytest.raises(ValueError, match="--dataset folder --data_dir PATH") as info:
        load_dataset("cifar10", data_dir=str(tmp_path), download=False)
    assert "cifar10" in str(info.value) and str(tmp_path) in str(info.value)


def test_tfds_download_failure_is_a_value_error(tfds, tmp_path, monkeypatch):
    def offline(self, *args, **kwargs):
        raise ConnectionError("network is unreachable")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
    # The host answers, the download itself fails.
    monkeypatch.setattr(datasets, "unreachable_download_hosts", lambda urls: (["host"], []))
    with pytest.raises(ValueError, match="network is unreachable.*--dataset folder"):
        load_dataset("cifar10", data_dir=str(tmp_path))


def test_unreachable_download_hosts_on_loopback():
    import socket

    listening = socket.create_server(("127.0.0.1", 0))
    open_port = listening.getsockname()[1]
    closed = socket.create_server(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    try:
        assert datasets.unreachable_download_hosts(
            [f"http://127.0.0.1:{open_port}/a.tar.gz"]) == (["127.0.0.1"], [])
        tried, unreachable = datasets.unreachable_download_hosts(
            [f"http://127.0.0.1:{closed_port}/a", f"http://127.0.0.1:{closed_port}/b"],
            timeout=2)
        assert tried == ["127.0.0.1"] and len(unreachable) == 1
        assert "127.0.0.1 (ConnectionRefusedError" in unreachable[0]
    finally:
        listening.close()


OFFLINE_SITECUSTOMIZE = """
import socket
def _unreachable(*args, **kwargs):
    raise OSError(101, "Network is unreachable (test)")
socket.create_connection = _unreachable
socket.socket.connect = _unreachable
socket.getaddrinfo = _unreachable
"""


def test_quick_start_command_offline_fails_fast_with_the_folder_hint(tmp_path):
    """The README's main command on a machine without network: one line pointing to
    --dataset folder, from the reachability check (not after the downloader's retries),
    and no results folder."""
    import subprocess
    import sys

    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(OFFLINE_SITECUSTOMIZE)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"),
           "TFDS_DATA_DIR": str(tmp_path / "tfds")}
    done = subprocess.run(
        [sys.executable, "train.py", "--model", "directpred", "--eigenspace", "--name", "run",
         "--results_dir", str(tmp_path / "results")],
        cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("train.py: error: TensorFlow Datasets 'cifar10' is not prepared")
    assert "no download host answers" in last and "--dataset folder --data_dir PATH" in last
    assert not (tmp_path / "results").exists()


def test_unknown_dataset_name(tfds):
    with pytest.raises(ValueError, match="no_such_dataset_xyz"):
        load_dataset("no_such_dataset_xyz", download=False)


@pytest.fixture(scope="module")
def local_tfds(tfds, tmp_path_factory):
    """Two tiny tfds builders prepared offline: train/test/unlabelled splits of
    variable-size images (like stl10), and a single train split (like tf_flowers)."""
    features = lambda: tfds.features.FeaturesDict({  # noqa: E731
        "image": tfds.features.Image(shape=(None, None, 3)),
        "label": tfds.features.ClassLabel(names=["zero", "one", "two"])})

    def examples(n, offset):
        for i in range(n):
            img = np.full((6 + i % 3, 9, 3), offset + i, np.uint8)  # value = example id
            yield i, {"image": img, "label": (offset + i) % 3}

    class LocalSslImages(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")
        # No source file / checksums to look up (the lookup needs importlib_resources,
        # which tfds 4.9.10 uses without declaring it).
        code_path = None

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=features())

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(12, 0),
                    "test": self._generate_examples(6, 100),
                    "unlabelled": self._generate_examples(9, 200)}

        def _generate_examples(self, n, offset):
            yield from examples(n, offset)

    class LocalOneSplit(LocalSslImages):
        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(40, 0)}

    data_dir = str(tmp_path_factory.mktemp("tfds"))
    for cls in (LocalSslImages, LocalOneSplit):
        cls(data_dir=data_dir).download_and_prepare()
    return data_dir


def test_tfds_train_test_unlabelled(local_tfds):
    data = load_dataset("local_ssl_images", data_dir=local_tfds, image_size=8)
    assert data.class_names == ("zero", "one", "two") and data.image_size == 8
    assert (data.num_pretrain, data.num_train, data.num_test) == (21, 12, 6)
    x, y = arrays(data.train)
    assert x.shape == (12, 8, 8, 3) and x.dtype == np.uint8 and y.dtype == np.int32
    ids = x[:, 0, 0, 0].astype(int)
    np.testing.assert_array_equal(y, ids % 3)  # labels travel with their images
    assert len(set(ids)) == 12
    pre = arrays(data.pretrain)[:, 0, 0, 0].astype(int)
    assert sorted(pre) == list(range(12)) + list(range(200, 209))  # train + unlabelled
    np.testing.assert_array_equal(arrays(data.pretrain)[:, 0, 0, 0],
                                  arrays(data.pretrain)[:, 0, 0, 0])  # deterministic order
    sub = load_dataset("local_ssl_images", data_dir=local_tfds, image_size=8,
                       max_train_examples=5, max_test_examples=2, seed=1)
    assert (sub.num_pretrain, sub.num_train, sub.num_test) == (5, 5, 2)
    assert len(arrays(sub.pretrain)) == 5 and len(arrays(sub.test)[1]) == 2
    assert set(arrays(sub.train)[0][:, 0, 0, 0]) <= set(range(12))


def test_tfds_single_split_gets_a_fixed_train_test_split(local_tfds):
    a = load_dataset("local_one_split", data_dir=local_tfds, image_size=8, seed=0)
    b = load_dataset("local_one_split", data_dir=local_tfds, image_size=8, seed=5)
    assert (a.num_train, a.num_test) == (34, 6)  # 85 / 15
    train_ids = set(arrays(a.train)[0][:, 0, 0, 0])
    test_ids = set(arrays(a.test)[0][:, 0, 0, 0])
    assert not train_ids & test_ids and len(train_ids | test_ids) == 40
    assert test_ids == set(arrays(b.test)[0][:, 0, 0, 0])  # independent of the run seed


def test_tfds_variable_size_images_need_image_size(local_tfds):
    with pytest.raises(ValueError, match="image_size"):
        load_dataset("local_ssl_images", data_dir=local_tfds)


# ---------------------------------------------------------------------------
# Validation split held out of the train split (tuning without the test split).
# ---------------------------------------------------------------------------

def ids(ds):
    """Example ids (the pixel value) of an (image, label) or image dataset."""
    items = arrays(ds)
    return (items[0] if isinstance(items, tuple) else items)[:, 0, 0, 0].astype(int)


def test_validation_is_held_out_of_train_and_pretraining(local_tfds):
    data = load_dataset("local_one_split", data_dir=local_tfds, image_size=8,
                        validation_examples=10, seed=3)
    full = load_dataset("local_one_split", data_dir=local_tfds, image_size=8, seed=3)
    assert data.eval_split == "validation" and full.eval_split == "test"
    assert (data.num_train, data.num_test, data.num_pretrain) == (24, 10, 24)
    train, val = ids(data.train), ids(data.test)
    assert len(train) == 24 and len(val) == 10 and not set(train) & set(val)
    assert sorted(train.tolist() + val.tolist()) == sorted(ids(full.train).tolist())
    assert not set(val) & set(ids(full.test))  # the test split is never the evaluation split
    np.testing.assert_array_equal(ids(data.pretrain), train)  # pre-training never sees val
    _, labels = arrays(data.test)
    np.testing.assert_array_equal(labels, val % 3)  # labels travel with their images
    again = load_dataset("local_one_split", data_dir=local_tfds, image_size=8,
                         validation_examples=10, seed=3)
    np.testing.assert_array_equal(ids(again.test), val)  # seeded
    other = load_dataset("local_one_split", data_dir=local_tfds, image_size=8,
                         validation_examples=10, seed=4)
    assert set(ids(other.test)) != set(val)


def test_validation_of_a_train_subset_and_of_stl10_like_pretraining(local_tfds):
    sub = load_dataset("local_one_split", data_dir=local_tfds, image_size=8,
                       max_train_examples=12, validation_examples=4, seed=1)
    whole = load_dataset("local_one_split", data_dir=local_tfds, image_size=8,
                         max_train_examples=12, seed=1)
    assert (sub.num_train, sub.num_test) == (8, 4)
    assert set(ids(sub.train)) | set(ids(sub.test)) == set(ids(whole.train))
    stl = load_dataset("local_ssl_images", data_dir=local_tfds, image_size=8,
                       validation_examples=3)
    assert not stl.pretrain_from_train and (stl.num_train, stl.num_test) == (9, 3)
    assert set(ids(stl.test)) <= set(range(12))  # from train, not from test (ids 100+)
    assert stl.num_pretrain == 21 and len(ids(stl.pretrain)) == 21  # its own pre-training set


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(validation_examples=34), "between 1 and .*33.*validation_examples=34"),
    (dict(validation_examples=5, max_test_examples=3), "max_test_examples=3"),
])
def test_validation_errors_name_the_value(local_tfds, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        load_dataset("local_one_split", data_dir=local_tfds, image_size=8, **kwargs)


def test_config_validation_examples_is_checked_and_passed():
    with pytest.raises(ValueError, match="validation_examples=-1"):
        Config(validation_examples=-1)
    with pytest.raises(ValueError, match="max_test_examples=20"):
        Config(validation_examples=10, max_test_examples=20)
    data = load_dataset_from_config(Config(dataset="synthetic", image_size=8,
                                           max_train_examples=40, validation_examples=8))
    assert (data.num_train, data.num_test, data.eval_split) == (32, 8, "validation")


def test_folder_counts_every_undecodable_file_and_names_a_few(tmp_path):
    root = tmp_path / "data"
    make_folder(root, train_per_class=2, test_per_class=1)
    bad = []
    for i in range(7):  # 0-byte PNGs, a JPEG of garbage, a truncated PNG
        path = root / "train" / ("ant", "bee", "cat")[i % 3] / f"bad{i}.png"
        path.write_bytes(b"" if i % 2 else b"\xff\xd8\xff\xe0 garbage" * 3)
        bad.append(str(path))
    good = (root / "test" / "cat" / "a.png").read_bytes()
    (root / "test" / "cat" / "cut.png").write_bytes(good[:20])
    with pytest.raises(ValueError) as info:
        load_dataset("folder", data_dir=str(root), image_size=8)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("7 of 13 image files cannot be decoded: ")
    named = [p for p in bad if p in message]
    assert len(named) == 5 and message.endswith("and 2 more. Remove or replace them.")
    assert "(empty file)" in message
    # the test split is checked too (the train split's error comes first)
    for path in bad:
        os.remove(path)
    with pytest.raises(ValueError, match=r"^1 of 4 image files .*cut\.png \("):
        load_dataset("folder", data_dir=str(root), image_size=8)


def test_folder_with_one_class_is_refused_before_decoding(tmp_path):
    root = tmp_path / "data"
    make_folder(root, classes=("cat",))
    (root / "train" / "cat" / "broken.png").write_bytes(b"")  # not reached
    with pytest.raises(ValueError, match=r"train has 1 class folder \(cat\); .* at least 2"):
        load_dataset("folder", data_dir=str(root), image_size=8)

