#!/usr/bin/env python3
"""Runs a demp ONNX export in ONNX Runtime and compares its logits with demp's (test_export.cpp).

Checks the interface (input "input" N×C×H×W float32 with a dynamic N, output "logits", the
normalisation in the metadata), then the logits of the whole batch, of one image and of an odd
batch against the expected ones. Exit 0 when the largest absolute difference is <= --tol.
"""
import argparse
import json
import sys

import numpy as np
import onnxruntime as ort


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--input", required=True, help=".npy of normalised images N×C×H×W")
    p.add_argument("--expected", required=True, help=".npy of demp's logits")
    p.add_argument("--tol", type=float, default=1e-4)
    a = p.parse_args()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    s = ort.InferenceSession(a.model, opts, providers=["CPUExecutionProvider"])
    x, y = np.load(a.input), np.load(a.expected)
    problems = []
    (inp,), (out,) = s.get_inputs(), s.get_outputs()
    if inp.name != "input" or out.name != "logits":
        problems.append(f"names {inp.name!r} -> {out.name!r}, want 'input' -> 'logits'")
    if isinstance(inp.shape[0], int) or list(inp.shape[1:]) != list(x.shape[1:]):
        problems.append(f"input shape {inp.shape}: want a dynamic batch of {list(x.shape[1:])}")
    meta = s.get_modelmeta().custom_metadata_map
    for k in ("demp.normalization.mean", "demp.normalization.std", "demp.arch"):
        if k not in meta:
            problems.append(f"metadata {k} missing")
    diffs = {}
    for name, sl in (("all", slice(None)), ("one", slice(0, 1)), ("seven", slice(3, 10))):
        (got,) = s.run(["logits"], {"input": np.ascontiguousarray(x[sl])})
        if got.shape != y[sl].shape:
            problems.append(f"batch {name}: shape {got.shape}, want {y[sl].shape}")
            continue
        diffs[name] = float(np.abs(got - y[sl]).max())
    worst = max(diffs.values()) if diffs else float("inf")
    if worst > a.tol:
        problems.append(f"max abs diff {worst:.3g} > {a.tol}")
    print(json.dumps({"max_abs_diff": diffs, "logit_scale": float(np.abs(y).max()),
                      "nodes_ok": not problems, "problems": problems}))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
