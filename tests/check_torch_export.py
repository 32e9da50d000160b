#!/usr/bin/env python3
"""Rebuilds a demp torch export with python/demp_load.py and evaluates it on the Fashion-MNIST
test set (test_export.cpp): the accuracy must equal demp's exactly, the logits within --tol.

Reads the IDX files itself (numpy) and normalises with the export's recorded mean/std, as a user
would; only torch and numpy are needed.
"""
import argparse
import gzip
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import demp_load  # noqa: E402


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(magic & 0xFF)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * len(dims)).reshape(dims)


def find(d, base):
    for name in (base + ".gz", base):
        if os.path.exists(os.path.join(d, name)):
            return os.path.join(d, name)
    raise FileNotFoundError(os.path.join(d, base))


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--export", required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--expected", required=True, help=".npy of demp's logits on the test set")
    p.add_argument("--accuracy", type=float, required=True, help="demp's test accuracy")
    p.add_argument("--tol", type=float, default=1e-5)
    a = p.parse_args()
    torch.set_num_threads(1)
    net = demp_load.load(a.export)
    images = torch.from_numpy(read_idx(find(a.data_dir, "t10k-images-idx3-ubyte")).copy())
    labels = torch.from_numpy(read_idx(find(a.data_dir, "t10k-labels-idx1-ubyte")).astype(np.int64))
    x = demp_load.normalize(images.unsqueeze(1), net)
    with torch.no_grad():
        logits = torch.cat([net(x[i:i + 1000]) for i in range(0, len(x), 1000)])
    acc = (logits.argmax(1) == labels).sum().item() / len(labels)
    expected = torch.from_numpy(np.load(a.expected))
    diff = (logits - expected).abs().max().item()
    problems = []
    if acc != a.accuracy:
        problems.append(f"accuracy {acc} != demp's {a.accuracy}")
    if diff > a.tol:
        problems.append(f"max abs logit diff {diff:.3g} > {a.tol}")
    print(json.dumps({"images": len(labels), "accuracy": acc, "demp_accuracy": a.accuracy,
                      "max_abs_diff": diff, "problems": problems}))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
