#!/usr/bin/env python3
"""ONNX Runtime side of `demp bench --inference`: seconds per forward of ONNX models.

Each model gets one session (CPU, `--threads` intra-op threads, one inter-op thread, all graph
optimisations); rounds alternate between the models so that machine-load drifts hit them alike.
Batch 1 runs `--latency-steps` timed forwards per round, larger batches `--steps`. Prints one
JSON line: {"onnxruntime": version, "threads": T,
            "results": {name: {batch: median seconds per forward}}}.
"""
import argparse
import json
import statistics
import time

import numpy as np
import onnxruntime as ort


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", action="append", required=True, metavar="NAME=FILE")
    p.add_argument("--batch-sizes", default="1,256")
    p.add_argument("--latency-steps", type=int, default=200)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = a.threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sessions = {}
    for spec in a.model:
        name, path = spec.split("=", 1)
        sessions[name] = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

    batches = [int(b) for b in a.batch_sizes.split(",")]
    rng = np.random.default_rng(0)
    times = {n: {b: [] for b in batches} for n in sessions}
    for _ in range(a.rounds):
        for name, s in sessions.items():
            shape = [d if isinstance(d, int) else 1 for d in s.get_inputs()[0].shape]
            for b in batches:
                x = rng.standard_normal([b] + shape[1:], dtype=np.float32)
                feed = {s.get_inputs()[0].name: x}
                n = a.latency_steps if b == 1 else a.steps
                for _ in range(a.warmup):
                    s.run(None, feed)
                t0 = time.perf_counter()
                for _ in range(n):
                    s.run(None, feed)
                times[name][b].append((time.perf_counter() - t0) / n)
    results = {n: {str(b): statistics.median(v) for b, v in t.items()} for n, t in times.items()}
    print(json.dumps({"onnxruntime": ort.__version__, "threads": a.threads, "results": results}))


if __name__ == "__main__":
    main()
