"""Worker of test_onednn_sizes.py: one encoder training step (forward, gradients,
SGD update: the convolution kernels of the train step) per (width, image size).

    python tests/models/size_sweep.py 0.0625,0.125 32,64

Prints ``start W S`` before and ``ok W S`` after each step, so that a crash of
the process (segmentation fault, double free) names the size it died at.
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

from config import get_config  # noqa: E402


def main(widths, sizes, batch=4):
    import keras

    from models import build_encoder
    rng = np.random.default_rng(0)
    for width in widths:
        for size in sizes:
            print(f"start {width} {size}", flush=True)
            encoder = build_encoder(get_config("byol", width=width, image_size=size))
            encoder.compile(optimizer="sgd", loss="mse")
            images = rng.normal(size=(batch, size, size, 3)).astype("float32")
            target = np.zeros((batch, encoder.output_shape[-1]), "float32")
            loss = encoder.train_on_batch(images, target)
            assert np.isfinite(loss), (width, size, loss)
            print(f"ok {width} {size}", flush=True)


if __name__ == "__main__":
    main([float(w) for w in sys.argv[1].split(",")], [int(s) for s in sys.argv[2].split(",")])
