"""A folder scan reports its progress (issue 29: minutes of silence on a large folder)."""

import io

import numpy as np
from PIL import Image

from experiments import console


def write_pngs(folder, count, size=8):
    folder.mkdir(parents=True)
    paths = []
    for i in range(count):
        path = folder / f"{i:03d}.png"
        Image.fromarray(np.full((size, size, 3), i, np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_both_decoders_report_every_chunk_and_the_counter_prints_plain_lines(tmp_path):
    from data_processing import arrays, datasets
    paths = write_pngs(tmp_path / "a", 5)
    for decode, kwargs in ((datasets.decode_images, {"batch": 2}),
                           (arrays.decode_images, {"chunk": 2})):
        seen = []
        images = decode(paths, None, progress=lambda d, t: seen.append((d, t)), **kwargs)
        assert images.shape == (5, 8, 8, 3)
        assert seen == [(2, 5), (4, 5), (5, 5)], decode
    out = io.StringIO()  # not a terminal: plain lines, every 10% and at the end
    counter = console.image_counter(out, every=0.5)
    for done in (1, 2, 3, 4):
        counter("train", done, 4)
    assert out.getvalue().splitlines() == ["checking images (train): 2/4",
                                           "checking images (train): 4/4"]
