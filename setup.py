"""Installable package: ``pip install -e .[test]`` (see README)."""

from setuptools import find_packages, setup

setup(
    name="nc-ssl",
    version="0.1.0",
    description=("Non-contrastive self-supervised learning (BYOL, SimSiam, DirectPred, "
                 "DirectCopy) in TensorFlow 2 / Keras 3: a reproduction of Tian, Chen & "
                 "Ganguli, ICML 2021."),
    # Every Python for which the pins below all publish wheels: tensorflow-cpu 2.21.0 has
    # cp310-cp313, keras 3.15.1 requires >= 3.11, jaxlib 0.10.2 has cp311-cp314 (checked
    # with pip download --only-binary=:all: --python-version X for each pin).
    python_requires=">=3.11,<3.14",
    # train.py is also a module: the nc-ssl-train console script runs train.cli.
    py_modules=["train"],
    entry_points={"console_scripts": ["nc-ssl-train=train:cli",
                                      "nc-ssl-test=experiments.evaluate_cli:cli"]},
    packages=find_packages(include=["backends", "config", "models", "models.*",
                                    "data_processing", "data_processing.*", "experiments",
                                    "experiments.*"]),
    install_requires=[
        # CPU build; GPU users: pip install "tensorflow[and-cuda]==2.21.0" (README).
        "tensorflow-cpu==2.21.0",
        "keras==3.15.1",
        "tensorflow-datasets==4.9.10",
        # tfds 4.9.10 imports it in download_and_prepare without declaring it.
        "importlib-resources==7.1.0",
        "tensorboard==2.21.0",
        "absl-py==2.5.1",
        "numpy>=1.26,<3",
        "matplotlib==3.11.2",
    ],
    extras_require={
        "test": [
            "pytest==9.0.3",
            "pytest-xdist==3.8.0",
            "nbclient==0.11.0",
            "nbformat==5.11.1",
            "ipykernel==7.4.0",
            # tests/models/test_probe_convergence.py: the L-BFGS reference probe.
            "scipy==1.17.1",
        ],
        # The JAX backend (KERAS_BACKEND=jax; docs/backends.md): a CPU build. Keras
        # 3.15 declares no JAX pin; 0.10.2 is the newest on the index and passes the
        # TF-vs-JAX equivalence tests (tests/models/test_jax_*.py). The accelerator
        # machine brings its own jax with a CUDA plugin.
        "jax": [
            "jax==0.10.2",
            "jaxlib==0.10.2",
        ],
    },
)
