#!/usr/bin/env bash
# Prepares the files that device_run.py needs on a machine with JAX and a GPU but no
# TensorFlow and no network (docs/backends.md): wheels of what that machine lacks
# (Keras and its two small pure dependencies, for CPython 3.12 on x86-64) into .whl/,
# and the CIFAR-10 image-folder tarball into .device_data/. Both are git-ignored.
#
#   bash experiments/scripts/prepare_device_run.sh ../shared/data/cifar10-jpeg.tar.gz
set -euo pipefail
cd "$(dirname "$0")/../.."
tarball="${1:?usage: prepare_device_run.sh CIFAR10_JPEG_TARBALL}"
[ -f "$tarball" ] || { echo "prepare_device_run.sh: error: no file $tarball" >&2; exit 2; }
mkdir -p .whl .device_data
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl keras==3.15.1 optree==0.20.0 namex==0.1.0
cp "$tarball" .device_data/
du -sh .whl .device_data
echo "device command (carry .whl and .device_data):"
echo "  python3 experiments/scripts/device_run.py --wheels .whl --data .device_data/$(basename "$tarball") --out \$OUT --budget_s 300"
